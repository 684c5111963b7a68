"""The run directory: metrics.json, splits.json, checkpoint/ (safetensors), written atomically."""

import json
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.files import write_atomically

CHECKPOINT = "checkpoint/trainable.safetensors"


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def save_checkpoint(run_dir: Path, state: dict[str, torch.Tensor], cfg: DictConfig) -> int:
    """Save the trainable parameters only, with the resolved config beside them; returns the file's size."""
    path = run_dir / CHECKPOINT
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_atomically(path, lambda handle: handle.write(save(tensors, metadata={"format": "pt"})))
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
