"""Errors a user can act on: each one renders as a single line naming the culprit."""


class FrcnnError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero, without a traceback."""


class ParamError(FrcnnError):
    """A key in params.yaml is unknown, of the wrong type or out of range."""


class DatasetError(FrcnnError):
    """A dataset file is missing, unreadable or malformed."""


class ArtifactError(FrcnnError):
    """A pipeline artifact is missing, incomplete, or was made from other inputs."""
