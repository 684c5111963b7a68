"""SIGINT (Ctrl-C) and SIGTERM (what SLURM sends before it kills a job) during a job.

While the training loop defers them, a signal stops training at the next step boundary, after the loop has
saved a resumable state; anywhere else, and on a second signal, the job stops at once. Either way the job
wrapper marks the run `interrupted` and exits with 128 + the signal's number, without a traceback.
"""

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None
_deferring = False


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handle(signum, _frame) -> None:
    global _received
    first = _received is None
    _received = signum
    if not (_deferring and first):
        raise Interrupted(signum)


@contextmanager
def handled():
    """Catch the signals for the length of a job (only the main thread can install handlers)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _received = None
    for s in SIGNALS:
        signal.signal(s, _handle)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received = None


@contextmanager
def deferred():
    """Within this block a (first) signal only sets a flag, for `requested()` and `check()` to act on."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False


def requested() -> bool:
    return _received is not None


def check() -> None:
    if _received is not None:
        raise Interrupted(_received)
