"""Errors that are the user's to fix: shown as one line, never as a traceback."""


class UserError(Exception):
    """Bad input (path, position, model, option). The CLI prints it on one line and exits 2."""


class ModelLoadError(UserError):
    """A model file that exists but cannot be loaded; the message names the file and the reason."""
