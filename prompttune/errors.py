"""User-facing errors: one line naming the problem and the fix, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, data, paths). The CLI prints `error: <message>` and exits 2."""


def one_line(err: Exception | str) -> str:
    """A message on one line (a library's multi-line error inside ours)."""
    return " ".join(str(err).split())
