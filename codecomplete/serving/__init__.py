"""Serving completions: the long-lived service, its scheduler, and the shared daemon with its client."""
