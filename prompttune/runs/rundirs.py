"""Run dirs that no two runs share: each is created exclusively, and on a clash the next free name is taken
(`<dir>-1`, `<dir>-2`, ...). The CLI claims the dir before Hydra starts and hands it over as hydra.run.dir
(hydra.sweep.dir for -m), so two runs started in the same second never write into one dir."""

import fcntl
import itertools
import os
from contextlib import contextmanager
from pathlib import Path

from prompttune.errors import UserError, one_line


def claim(path: Path) -> Path:
    """Create `path`, or the first free `path-N`, exclusively; return the one created."""
    make_parent(path)
    for n in itertools.count():
        candidate = path if n == 0 else path.with_name(f"{path.name}-{n}")
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"cannot create the run dir {candidate}: {unwritable(err)}") from None


def make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {path.parent}: {unwritable(err)}") from None


def reuse(path: Path) -> Path:
    """An existing sweep dir, to finish its sweep: it must be writable."""
    make_parent(path)
    try:
        path.mkdir(exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write into {path}: {unwritable(err)}") from None
    return path


def unwritable(err: OSError) -> str:
    where = "hydra.run.dir=DIR, or hydra.sweep.dir=DIR with -m"
    return f"{err.strerror or one_line(err)}; choose a writable place ({where})"


class OtherRunsDir(UserError):
    """The dir holds another run's files (another config, or a job still running there): leave them alone."""


class RunDirBusy(OtherRunsDir):
    """Another live process runs a job in this dir."""


@contextmanager
def owned(run_dir: Path):
    """Hold the run dir for the length of a job: a second process that starts a job in it (one sweep run twice
    at once, a resume of a run still running) stops with an error instead of writing into it."""
    try:
        handle = open(run_dir / ".lock", "a")  # held open (and locked) for the whole job
    except OSError as err:
        raise UserError(f"cannot write into {run_dir}: {unwritable(err)}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirBusy(f"{run_dir} is in use by another running job; wait for it to end or stop it") from None
    try:
        yield
    finally:
        handle.close()
