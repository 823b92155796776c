"""Exceptions raised by `full` for user errors (bad files, wrong formats); the CLIs print them as one line."""


class SidError(Exception):
    """Base class of every user-facing error in `full`."""


class CheckpointError(SidError, ValueError):
    """A network file is missing, corrupt, unsafe, or does not match the network it describes."""
