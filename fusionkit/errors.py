"""The errors fusionkit raises, each with a message a user can act on."""

from __future__ import annotations


class FusionError(Exception):
    """Base class of every fusionkit error."""


class NotConnectedError(FusionError):
    """An operation needs a cluster: call ``fusionkit.connect()`` first."""


class StageNotFoundError(FusionError, KeyError):
    """No stage of that name exists in the pipeline."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "stage not found"


class StageFailedError(FusionError):
    """A stage failed; carries the remote traceback so notebooks show where it happened.

    IPython calls ``_render_traceback_`` to show an exception; returning the remote frames
    makes a failing stage look like a local error, and makes nbval/nbclient fail the cell.
    """

    def __init__(self, stage: str, error: str, traceback: str = "", actor: str = ""):
        self.stage = stage
        self.error = error
        self.remote_traceback = traceback
        self.actor = actor
        where = f"stage {stage!r}" + (f" ({actor})" if actor else "")
        super().__init__(f"{where} failed: {error}")

    def __reduce__(self):  # crosses process boundaries (Ray) with all its fields
        return (type(self), (self.stage, self.error, self.remote_traceback, self.actor))

    def _render_traceback_(self) -> list[str]:
        head = f"StageFailedError: {self.args[0]}"
        lines = [head, "", "Remote traceback (most recent call last):"]
        lines += [f"    {line}" for line in self.remote_traceback.rstrip().splitlines()]
        return lines


class ModelNotFoundError(FusionError, KeyError):
    """No such model or version in the registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "model not found"


class CorruptCheckpointError(FusionError):
    """A file on disk does not match its recorded checksum; it is refused, not loaded."""


class RegistryError(FusionError, ValueError):
    """An operation the registry's current state does not allow (e.g. rollback while pinned)."""


class SchemaError(FusionError, ValueError):
    """Data does not have the columns or types a stage needs."""


class StorageKeyError(FusionError):
    """A storage folder or file was signed with another fusionkit secret than this process's
    (see ``fusionkit._signing``): it is refused, nothing in it is unpickled."""


class InvalidNameError(FusionError, ValueError):
    """A stage or model name that cannot be used: names become file and folder names."""


class ModelDivergedError(FusionError):
    """A train stage's model gives NaN or infinite predictions or weights (a learning rate
    too large for the data's scale, unscaled features): it is not published."""


class SettingsError(FusionError, ValueError):
    """A setting that cannot work (a drift window of one event, a threshold out of range):
    refused when the object is made, with the rule it breaks."""


class MissingDependencyError(FusionError, ImportError):
    """An optional package a feature needs is not installed; the message says which extra of
    fusionkit installs it."""
