"""A training run's resumable state: where the loop stands, and its snapshots on disk (no pickle).

A snapshot is two files in `<run dir>/state/`: `<step>.safetensors` (trainable parameters, under bf16 their fp32
master copies too, best-on-dev parameters, optimizer tensors, torch RNG states) and `<step>.json` (everything else:
step, data order and position in it, best-on-dev metrics, history, optimizer hyper-parameters, scheduler, python and
numpy RNG). Each file is written atomically and the JSON last, so a snapshot counts only once both are whole: a kill
at any moment, even mid-write, leaves the previous snapshot usable. Older snapshots are removed after a save.
"""

import json
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from prompttune.errors import UserError, one_line
from prompttune.files import write_atomically, write_json
from prompttune.training.precision import MasterCopies

log = logging.getLogger(__name__)
STATE_DIR = "state"
FORMAT = 1


@dataclass
class TrainProgress:
    """Where the loop stands after `step` optimizer steps."""

    step: int = 0
    order: list[int] | None = None  # this epoch's data order; None: draw the next epoch's
    position: int = 0  # examples of `order` already trained on
    best_step: int = 0
    best_dev: dict | None = None
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict] = field(default_factory=list)
    step_seconds: float = 0.0


@dataclass
class Trainables:
    """What a snapshot saves besides the progress: the live objects of the loop."""

    method: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    shuffler: torch.Generator
    masters: MasterCopies


class Snapshots:
    """Save and restore a run's training state in `directory`, every `every` steps (None: only when asked)."""

    def __init__(self, directory: Path, fingerprint: str, every: int | None = None):
        self.directory, self.fingerprint, self.every = Path(directory), fingerprint, every

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == total)

    def save(self, progress: TrainProgress, live: Trainables) -> None:
        tensors, optimizer = _optimizer_tensors(live.optimizer)
        tensors |= {f"param/{k}": v for k, v in live.method.trainable_state().items()}
        tensors |= {f"best/{k}": v for k, v in (progress.best_state or {}).items()}
        tensors |= {f"rng/{k}": v for k, v in _torch_rng(live.shuffler).items()}
        tensors |= {f"master/{i}": v for i, v in enumerate(live.masters.masters)}  # fp32 copies of bf16 weights
        meta = {
            "format": FORMAT,
            "config_sha": self.fingerprint,
            "step": progress.step,
            "order": progress.order,
            "position": progress.position,
            "best_step": progress.best_step,
            "best_dev": progress.best_dev,
            "has_best_state": progress.best_state is not None,
            "history": progress.history,
            "step_seconds": progress.step_seconds,
            "optimizer": optimizer,
            "scheduler": live.schedule.state_dict(),
            "python_rng": random.getstate(),
            "numpy_rng": _numpy_rng(),
        }
        name = f"{progress.step:08d}"
        payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        write_atomically(self.directory / f"{name}.safetensors", lambda f: f.write(save(payload)))
        write_json(self.directory / f"{name}.json", meta)
        for old in self.directory.glob("*.json"):
            if old.stem != name:
                old.unlink(missing_ok=True)
                old.with_suffix(".safetensors").unlink(missing_ok=True)
        log.info("saved a resumable state at step %d in %s", progress.step, self.directory)

    def latest(self) -> Path | None:
        """The newest complete snapshot's JSON (the safetensors of a snapshot is written first)."""
        complete = [p for p in self.directory.glob("*.json") if p.with_suffix(".safetensors").exists()]
        return max(complete, key=lambda p: p.stem) if complete else None

    def restore(self, live: Trainables) -> TrainProgress | None:
        """Load the newest snapshot into the live objects; None when there is none."""
        path = self.latest()
        if path is None:
            return None
        meta, tensors = _read(path), _read_tensors(path.with_suffix(".safetensors"))
        if meta.get("config_sha") != self.fingerprint:
            raise UserError(f"{path} was saved by a run of another config; resume it with the config it was run with")
        try:
            live.method.load_trainable_state(_prefixed(tensors, "param/"))
            _restore_masters(live.masters, _prefixed(tensors, "master/"))
            live.optimizer.load_state_dict(_optimizer_state(meta["optimizer"], tensors))
            live.schedule.load_state_dict(meta["scheduler"])
            _set_rng(tensors, meta, live.shuffler)
            best = _prefixed(tensors, "best/") if meta["has_best_state"] else None
            progress = TrainProgress(
                meta["step"],
                meta["order"],
                meta["position"],
                meta["best_step"],
                meta["best_dev"],
                best,
                meta["history"],
                meta["step_seconds"],
            )
        except (KeyError, TypeError, ValueError, RuntimeError, UserError) as err:
            raise UserError(f"{path.parent}: snapshot {path.stem} does not fit this run ({one_line(err)})") from None
        log.info("resuming from step %d (%s)", progress.step, path)
        return progress

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _read(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path} is damaged ({one_line(err)}); delete it to resume from the snapshot before") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a prompttune state (format {FORMAT}); delete it to resume from the one before")
    return meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (OSError, SafetensorError, ValueError) as err:
        raise UserError(f"{path} is damaged ({one_line(err)}); delete it to resume from the snapshot before") from None


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _restore_masters(masters: MasterCopies, saved: dict[str, torch.Tensor]) -> None:
    """The saved fp32 masters; a snapshot without them (fp32, or saved before they were) starts them from the
    restored weights."""
    if saved:
        masters.load([saved[str(i)] for i in range(len(saved))])
    else:
        masters.model_to_masters()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer's state dict split into tensors (`optim/<param>/<key>`) and JSON (the rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(saved: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {int(i): dict(values) for i, values in saved["scalars"].items()}
    for name, value in _prefixed(tensors, "optim/").items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [g | ({"betas": tuple(g["betas"])} if "betas" in g else {}) for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def _torch_rng(shuffler: torch.Generator) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state(), "data_order": shuffler.get_state()}
    if torch.cuda.is_available():
        states |= {f"cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return states


def _numpy_rng() -> list:
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), position, has_gauss, gauss]


def _set_rng(tensors: dict[str, torch.Tensor], meta: dict, shuffler: torch.Generator) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    shuffler.set_state(tensors["rng/data_order"])
    cuda = [tensors[f"rng/cuda/{i}"] for i in range(torch.cuda.device_count()) if f"rng/cuda/{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
