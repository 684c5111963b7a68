"""The run directory: metrics.json, splits.json, checkpoint/ (safetensors), written atomically."""

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from prompttune.data.records import Example
from prompttune.errors import UserError

CHECKPOINT = "checkpoint/trainable.safetensors"


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def write_json(path: Path, payload: dict) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
    os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; run dirs are shared and read by others
    os.replace(tmp, path)


def save_checkpoint(run_dir: Path, state: dict[str, torch.Tensor], cfg: DictConfig) -> int:
    """Save the trainable parameters only, with the resolved config beside them; returns the file's size."""
    path = run_dir / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    OmegaConf.save(cfg, path.parent / "config.yaml", resolve=True)
    return path.stat().st_size


def load_run(run: str) -> tuple[Path, DictConfig, dict[str, torch.Tensor]]:
    run_dir = Path(run).expanduser()
    config, checkpoint = run_dir / "checkpoint" / "config.yaml", run_dir / CHECKPOINT
    for needed in (config, checkpoint):
        if not needed.exists():
            raise UserError(f"run={run}: {needed} is missing; point run= at a finished training run directory")
    return run_dir, OmegaConf.load(config), load_file(checkpoint)


def load_split_examples(run_dir: Path, split: str) -> list[Example]:
    path = run_dir / "splits.json"
    if not path.exists():
        raise UserError(f"run={run_dir}: splits.json is missing; point run= at a training run directory")
    saved = json.loads(path.read_text())
    index = {name: i for i, name in enumerate(saved["labels"])}
    return [Example(str(r["guid"]), r["text_a"], index[r["label"]], r.get("text_b")) for r in saved[split]]
