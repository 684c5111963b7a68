"""The run directory's files besides metrics.json: splits.json and checkpoint/ (safetensors), written
atomically and read back with a one-line error naming any file that is missing or damaged."""

import json
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from prompttune.data.config import DatasetConfig
from prompttune.data.records import Example
from prompttune.data.tagging import is_tagging, label_names, tagged_example
from prompttune.errors import UserError, one_line
from prompttune.files import write_atomically, write_json, write_text
from prompttune.models.config import ModelConfig
from prompttune.runs.record import RunRecord
from prompttune.training.config import TrainerConfig

CHECKPOINT = "checkpoint/trainable.safetensors"
CHECKPOINT_CONFIG = "checkpoint/config.yaml"
SPLITS = "splits.json"
FITTED = "checkpoint/fitted.json"  # what a method learnt without gradients (vocabulary, label words)
SCHEMAS = {"model": ModelConfig, "dataset": DatasetConfig, "trainer": TrainerConfig}


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def save_checkpoint(run_dir: Path, state: dict[str, torch.Tensor], cfg: DictConfig, fitted: dict | None = None) -> int:
    """Save the trainable parameters only, with the resolved config (and what the method fitted without
    gradients, as JSON) beside them; returns the size of the files."""
    path = run_dir / CHECKPOINT
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"format": "pt", "method": cfg.method.name, "model": cfg.model.name}
    write_atomically(path, lambda handle: handle.write(save(tensors, metadata=metadata)))
    write_text(run_dir / CHECKPOINT_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    if fitted:
        write_json(run_dir / FITTED, fitted)
        return path.stat().st_size + (run_dir / FITTED).stat().st_size
    return path.stat().st_size


def load_fitted(run_dir: Path) -> dict:
    path = run_dir / FITTED
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"run={run_dir}: {path} is not valid JSON; retrain the run") from None


def load_run(run: str) -> tuple[Path, DictConfig, dict[str, torch.Tensor]]:
    """A finished training run's dir, config and checkpoint tensors."""
    run_dir = Path(run).expanduser()
    record = RunRecord.read(run_dir)
    if record is None:
        raise UserError(f"run={run} is not a run directory (it has no metrics.json); point run= at a training run")
    config, checkpoint = run_dir / CHECKPOINT_CONFIG, run_dir / CHECKPOINT
    for needed in (config, checkpoint):
        if not needed.exists():
            raise UserError(f"{needed} is missing; point run= at a finished training run directory")
    cfg, (tensors, saved_by) = _read_config(config), _read_tensors(checkpoint)
    trained = f"{cfg.method.name} on {cfg.model.name}"
    if f"{record.method} on {record.model}" != trained:
        raise UserError(f"{config} is for {trained} but metrics.json says {record.method} on {record.model}")
    saved = f"{saved_by.get('method', cfg.method.name)} on {saved_by.get('model', cfg.model.name)}"
    if saved != trained:
        raise UserError(f"{checkpoint} was saved by {saved}, not {trained}")
    return run_dir, cfg, tensors


def _read_config(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml's and omegaconf's errors have no common base
        raise UserError(f"{path} is damaged ({one_line(err)}); it cannot be read as YAML") from None
    missing = [key for key in ("method", "model", "dataset", "trainer", "seed") if key not in cfg]
    if not isinstance(cfg, DictConfig) or missing:
        raise UserError(f"{path} is damaged or not a prompttune config: it lacks {', '.join(missing) or 'keys'}")
    # a run saved before a key existed gets that key's default (e.g. trainer.compile); the method's node goes
    # through its own config class when the method is built
    for group, schema in SCHEMAS.items():
        try:
            cfg[group] = OmegaConf.merge(OmegaConf.structured(schema), cfg[group])
        except Exception as err:  # omegaconf's validation errors have no common base
            raise UserError(f"{path}: its {group} settings do not fit this version ({one_line(err)})") from None
    return cfg


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the metadata of a safetensors file."""
    try:
        with safe_open(path, framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata() or {}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError) as err:
        raise UserError(f"{path} is damaged (truncated or not safetensors: {one_line(err)})") from None


def load_checkpoint_into(method, state: dict[str, torch.Tensor], run_dir: Path) -> None:
    """The checkpoint's tensors and what the method fitted without gradients (checkpoint/fitted.json)."""
    fitted = load_fitted(run_dir)
    try:
        method.restore(state, fitted)
    except (UserError, RuntimeError) as err:
        raise UserError(f"{run_dir / CHECKPOINT} was not saved by this method and model: {one_line(err)}") from None


def load_split_examples(run_dir: Path, split: str, cfg: DictConfig) -> list[Example]:
    path = run_dir / SPLITS
    if not path.exists():
        raise UserError(f"{path} is missing; point run= at a training run directory")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        labels, rows = saved["labels"], saved[split]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is damaged (truncated or not a splits file: {one_line(err)})") from None
    if list(labels) != label_names(cfg.dataset):
        raise UserError(f"{path} has labels {labels} but the run's config has {label_names(cfg.dataset)}")
    index = {name: i for i, name in enumerate(labels)}
    try:
        if is_tagging(cfg.dataset):
            return [tagged_example(str(r["guid"]), r["tokens"], [index[t] for t in r["tags"]]) for r in rows]
        return [Example(str(r["guid"]), r["text_a"], index[r["label"]], r.get("text_b")) for r in rows]
    except (KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is damaged: an example of {split} lacks {one_line(err)}") from None
