"""Errors the user can fix: the CLI prints them as one line and exits non-zero."""


class VdcnnError(Exception):
    """A problem with the user's input, data, options or files (not a bug)."""


class ConfigError(VdcnnError):
    """An unknown key, a wrong type or an out-of-range value in a config or option."""


class DataError(VdcnnError):
    """A dataset that cannot be found, read or mapped to texts and labels."""


class NoLabels(DataError):
    """A split whose texts are there but whose label column is not (GLUE's and Kaggle's test files)."""


class UnknownLabels(DataError):
    """A split whose labels include values the label rule (the training split's) does not know."""


class CheckpointError(VdcnnError):
    """A run folder or model file that is missing, corrupt, unsafe or incompatible."""
