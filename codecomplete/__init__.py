"""codecomplete: private, low-latency local code completion."""

__version__ = "0.1.0"
