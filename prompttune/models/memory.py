"""Bounds before allocation: what a key would make the process allocate, checked against the memory there is, so
that a size typo ends in one line rather than in the kernel's OOM killer."""

import psutil

from prompttune.errors import UserError

GIB = 2**30
# A trained fp32 parameter costs its value, its gradient and AdamW's two moments.
TRAINED_BYTES = 4 * 4


def available_bytes() -> int:
    return psutil.virtual_memory().available


def check_fits(needed: int, what: str, fix: str) -> None:
    """A UserError naming `what`, the estimate and the limit when `needed` bytes exceed the available memory."""
    available = available_bytes()
    if needed > available:
        raise UserError(
            f"{what} needs about {needed / GIB:.1f} GiB, more than the {available / GIB:.1f} GiB of memory "
            f"available; {fix}"
        )
