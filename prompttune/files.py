"""Files that readers may open at any moment (a report of a running sweep): written whole or not at all."""

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from prompttune.errors import UserError


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same dir, then rename: a reader never sees half a file, and a
    failed write (a full disk, a read-only dir) leaves the old file whole and raises a one-line UserError.
    (Not tempfile's: their owner-only mode would stick to the file after the rename.)"""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except OSError as err:
        _remove(temp)
        raise UserError(f"cannot write {path}: {err.strerror or err}; {WRITE_HINT}") from None
    except BaseException:
        _remove(temp)
        raise


WRITE_HINT = "files already written are whole; free disk space or choose a writable output dir (hydra.run.dir=DIR)"


def _remove(temp: Path) -> None:
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        pass


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str))
