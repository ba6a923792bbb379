"""The error type for bad user input (configs, files, arguments): the CLI prints its message as
one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """Bad input from the user: the message names the file, key or value and what was expected."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named does not exist (also a ``FileNotFoundError`` for plain callers)."""
