"""One exception base; the CLI turns each kind into one line and an exit code."""

from __future__ import annotations


class FlowtopError(Exception):
    """Base of every failure flowtop reports to the user as one line."""

    exit_code = 1


class ConfigError(FlowtopError):
    """A bad option, value or config key."""

    exit_code = 2


class NotRootError(FlowtopError):
    """Not root / missing capabilities."""

    exit_code = 77


class KernelFeatureError(FlowtopError):
    """The kernel or bcc lacks something flowtop needs."""

    exit_code = 69


class InterfaceError(FlowtopError):
    """An interface that does not exist or cannot be attached to."""

    exit_code = 3


class AttachError(FlowtopError):
    """TC attach/detach failed."""

    exit_code = 4


class Interrupted(FlowtopError):
    """SIGINT/SIGTERM before the run started: whatever was attached is removed,
    nothing is printed, the exit status is 128 + the signal (130 for Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.exit_code = 128 + signum


class CollectorFailedError(FlowtopError):
    """The kernel maps could not be read for too many intervals in a row."""

    exit_code = 74  # EX_IOERR
