"""A kernel program beside the TC program: built in a child, attached in two steps.

The sock_ops tracker, the socket owner programs and the drop reasons program
start the same way: begin() checks what the kernel needs and starts the
compile in a build child (build.py), the caller does other things (the TC
program's build, attaching it), finish() waits for the build and attaches.
close() undoes whatever of that happened, on every path. StagedProgram is
that shape once; a subclass says what it checks, builds and attaches.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Self

from flowtop.errors import FlowtopError, KernelFeatureError
from flowtop.kernel.build import Build, Loaded, Request, no_checkpoint
from flowtop.kernel.cgroup import find_cgroup2


def cgroup2_root(arg: str | None) -> str:
    """The cgroup v2 directory to attach cgroup programs to: arg, else the
    mount find_cgroup2() picks; KernelFeatureError when there is none."""
    cgroup = arg or find_cgroup2()
    if cgroup is None:
        raise KernelFeatureError(
            "no cgroup v2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
        )
    if not os.path.isfile(os.path.join(cgroup, "cgroup.controllers")):
        raise KernelFeatureError(f"{cgroup} is not a cgroup v2 directory")
    return cgroup


class StagedProgram:
    """begin() / finish() / close() of a program built in a child.

    A subclass gives:
      what           how errors name it ("the sock_ops tracker")
      _prepare()     the checks (raise NotRootError / KernelFeatureError)
                     and the Request to build; runs in begin()
      _attach(l)     attach what the build loaded; raise on failure (close()
                     then undoes what it did attach)
      _detach()      undo _attach, whatever part of it happened; called by
                     close() before the loaded fds are closed
    and may override _wait(build, checkpoint) to retry a build.

    started is True once finish() attached; close() is safe to call twice,
    after a failed start() and between begin() and finish().
    """

    what = "the program"

    def __init__(self) -> None:
        self._build: Build | None = None
        self._loaded: Loaded | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what a subclass gives ----------------------------------------------------------

    def _prepare(self) -> Request:
        raise NotImplementedError

    def _attach(self, loaded: Loaded) -> None:
        raise NotImplementedError

    def _detach(self) -> None:
        raise NotImplementedError

    def _wait(self, build: Build, checkpoint: Callable[[], None]) -> Loaded:
        return build.wait(checkpoint)

    # -- the shape ----------------------------------------------------------------------

    def start(self, checkpoint: Callable[[], None] = no_checkpoint) -> None:
        """begin() and finish(): checks, compile, attach."""
        self.begin()
        self.finish(checkpoint)

    def begin(self) -> None:
        """The checks, and the compile started in a child process (it runs
        while the caller does other things). Once."""
        if self._build is not None or self._loaded is not None:
            return
        self._build = Build(self._prepare())

    def finish(self, checkpoint: Callable[[], None] = no_checkpoint) -> None:
        """Waits for the build (checkpoint: called meanwhile, may raise), then
        attaches; on any failure everything is undone before it is raised."""
        if self._build is None:
            if self._loaded is not None:
                return
            raise FlowtopError(f"{self.what} was not begun")
        try:
            self._loaded = self._wait(self._build, checkpoint)
            self._build = None
            self._attach(self._loaded)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Detach and free (see the class doc)."""
        self._detach()
        if self._build is not None:
            build, self._build = self._build, None
            build.close()
        if self._loaded is not None:
            loaded, self._loaded = self._loaded, None
            loaded.close()

    @property
    def loaded(self) -> Loaded | None:
        """What the build handed over, once finish() waited for it."""
        return self._loaded
