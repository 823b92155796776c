"""Exceptions for mistakes in what the user gave (options, files, formats); the CLIs print them as one line.

Only these are user errors: any other exception is a bug in our code and keeps its traceback.
"""


class SidError(Exception):
    """Base class of every user-facing error."""


class ConfigError(SidError, ValueError):
    """An option or configuration value that cannot work."""


class CheckpointError(SidError, ValueError):
    """A network file is missing, corrupt, unsafe, or does not match the network it describes."""
