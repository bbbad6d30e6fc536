"""User-facing errors. The CLI turns any FlatvolError into a one-line message and exit code 2."""


class FlatvolError(Exception):
    """Base class: the message is one line naming the problem (file, field, expected vs got)."""


class DataError(FlatvolError):
    """Missing, corrupt or inconsistent data files; impossible split sizes."""


class SpecError(FlatvolError):
    """Invalid experiment spec, model spec or option value."""


class VolumeError(FlatvolError):
    """Invalid kernel/labels, or a kernel that cannot be made positive definite."""


class CheckpointError(FlatvolError):
    """A run directory or checkpoint that cannot be read."""


class SweepError(FlatvolError):
    """The sweep could not finish (a worker process died); re-running resumes it."""


class WriteError(FlatvolError, OSError):
    """A file or folder flatvol must write cannot be written: a full disk, a quota, a read-only
    file system, no permission, or a file where a folder must be. It is also an OSError, so code
    that handles a failed write as an OSError still does."""
