"""A run's lifecycle: build the model and method from the config, train (or resume) or evaluate, and fill the
run directory (metrics.json as a RunRecord, splits.json, checkpoint/, state/)."""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from prompttune.config.run import validate
from prompttune.data import Splits, load_splits
from prompttune.data.facts import is_fact_probing
from prompttune.data.records import Example
from prompttune.data.tagging import ALL_SHOTS, label_names
from prompttune.errors import UserError
from prompttune.files import write_json
from prompttune.methods import METHODS, build_method, method_config
from prompttune.methods.core import CLASSIFICATION, Method, Task
from prompttune.models.loading import load_backbone
from prompttune.runs.checkpoint import FITTED, load_checkpoint_into, load_run, load_split_examples, now, save_checkpoint
from prompttune.runs.predictions import PREDICTIONS_FILE, write_task_predictions
from prompttune.runs.probes import peak_memory_mb, reset_peak_memory, timed
from prompttune.runs.record import RunRecord, config_sha, settings_of
from prompttune.runs.rundirs import OtherRunsDir
from prompttune.runs.tracking import TrackingCallback, final_metrics, flat_params, tracking
from prompttune.training import precision
from prompttune.training.flops import FlopCounter, throughput
from prompttune.training.loop import TrainResult, class_logits, evaluate, train
from prompttune.training.metrics import gold_labels, task_metrics
from prompttune.training.state import STATE_DIR, Snapshots

log = logging.getLogger(__name__)


@dataclass
class Setup:
    method: Method
    device: torch.device
    precision: str = "fp32"  # as resolved: fp32 or bf16
    fit_seconds: float = 0.0  # fit_examples: what the method learnt from the examples without the gradient loop


def task_of(cfg: DictConfig, splits_have_text_b: bool) -> Task:
    patterns = OmegaConf.to_container(cfg.dataset.patterns, resolve=True)
    language = cfg.dataset.get("language") or "en"
    kind = cfg.dataset.get("task") or CLASSIFICATION
    instruction = cfg.dataset.get("instruction")
    return Task(
        cfg.dataset.name,
        label_names(cfg.dataset),  # a tagging dataset's tags
        patterns,
        splits_have_text_b,
        language,
        int(cfg.seed),
        kind,
        instruction,
        str(cfg.dataset.get("candidates") or "vocabulary"),  # fact probing: what the object is ranked among
    )


def build(cfg: DictConfig, has_text_b: bool) -> Setup:
    device = pick_device(cfg.trainer.device)
    torch.manual_seed(int(cfg.seed))
    backbone = load_backbone(cfg.model) if METHODS[cfg.method.name].uses_backbone else None
    max_length = int(cfg.model.max_length)
    if backbone is not None:
        max_length = backbone.fitting_length(max_length, "model.max_length")
    method = build_method(cfg.method, backbone, task_of(cfg, has_text_b), max_length)
    method.to(device)
    if backbone is not None:
        precision.hold_backbone(method, cfg.trainer.precision, device)
        if cfg.trainer.compile:
            backbone.body.compile()
    return Setup(method, device, precision.resolve(cfg.trainer.precision, device))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda but no GPU is visible; use trainer.device=cpu or auto")
    return torch.device(name)


def job_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def begin(cfg: DictConfig, command: str, run_dir: Path, previous: RunRecord | None = None, **extra) -> RunRecord:
    """Mark the run as running in its metrics.json, and start measuring its peak memory."""
    reset_peak_memory()
    fields = dict(
        status="running",
        command=command,
        method=cfg.method.name,
        dataset=cfg.dataset.name,
        model=cfg.model.name,
        shots=shots_of(cfg),
        seed=int(cfg.seed),
        run_dir=str(run_dir),
        started_at=previous.started_at if previous else now(),
        config_sha=config_sha(cfg),
        settings=settings_of(job_overrides()),
        resumed_at_steps=previous.resumed_at_steps if previous else [],
    )
    record = RunRecord(**(fields | extra))
    record.write(run_dir)
    return record


def evaluate_test(setup: Setup, test: list[Example], trainer_cfg: DictConfig, run_dir: Path) -> tuple[dict, float]:
    """Test metrics (with intervals and calibration) and the seconds they took; writes predictions.jsonl."""
    encoded, task = setup.method.encode(test), setup.method.task
    logits, seconds = timed(class_logits, setup.method, encoded, trainer_cfg, setup.device)
    gold = gold_labels(encoded)
    write_task_predictions(run_dir / PREDICTIONS_FILE, test, logits, gold, setup.method)
    return task_metrics(task.kind).test(logits, gold, task.labels), seconds


def shots_of(cfg: DictConfig) -> int | str:
    """`shots` as given: a whole number, or all (a tagging dataset's whole training pool)."""
    return ALL_SHOTS if cfg.shots == ALL_SHOTS else int(cfg.shots)


def run_name(record: RunRecord) -> str:
    return f"{record.command}-{record.method}-{record.dataset}-K{record.shots}-seed{record.seed}"


def log_final(tracker, cfg: DictConfig, record: RunRecord) -> None:
    tracker.log_hparams(flat_params(cfg), final_metrics(record.to_json()), record.steps or 0)


def draw_splits(cfg: DictConfig, run_dir: Path, n_unlabeled: int = 0) -> tuple[Splits, Setup]:
    """Draw and save the split (and an unlabeled pool), build the method, give it the training examples. Fact
    probing builds the method first: the split keeps the facts whose object is one token for its tokenizer."""
    if is_fact_probing(cfg.dataset):
        validate(cfg)
        setup = build(cfg, False)
        splits = draw_split(cfg, run_dir, n_unlabeled, setup.method.head.answers)
    else:
        splits = draw_split(cfg, run_dir, n_unlabeled)
        setup = build(cfg, has_text_b(splits.train + splits.dev + splits.test))
    if splits.unlabeled:
        setup.method.see_unlabeled(splits.unlabeled)
    _, setup.fit_seconds = timed(setup.method.fit_examples, splits.train, splits.dev)
    return splits, setup


def draw_split(cfg: DictConfig, run_dir: Path, n_unlabeled: int = 0, keep_fact=None) -> Splits:
    """Validate the config, draw the few-shot split (and an unlabeled pool), save it to splits.json; `keep_fact`:
    which facts a fact-probing split keeps."""
    validate(cfg)
    splits = load_splits(cfg.dataset, shots_of(cfg), int(cfg.seed), n_unlabeled, keep_fact, str(cfg.model.name))
    write_json(run_dir / "splits.json", splits.to_json())
    return splits


def unlabeled_size(method_cfg: DictConfig) -> int:
    """How many unlabeled texts the method learns from (PET's LM loss and ensemble, trained word vectors)."""
    return method_config(method_cfg).unlabeled_texts()


def attach_unlabeled(method: Method, splits: Splits, cfg: DictConfig) -> None:
    """Give the method its unlabeled texts; without a pool beyond the few-shot split (ready-made LM-BFF
    splits) the training texts serve, their labels unused."""
    if unlabeled_size(cfg.method):
        texts = splits.unlabeled or splits.train
        method.use_unlabeled(method.encode(texts), int(cfg.trainer.batch_size))


def resumable_snapshots(cfg: DictConfig, run_dir: Path, previous: RunRecord | None) -> Snapshots:
    """The run's snapshots: kept when an interrupted (or killed) run of this config continues in its dir,
    cleared for a fresh start (a new run, or a failed sweep job run again)."""
    snapshots = Snapshots(run_dir / STATE_DIR, config_sha(cfg), cfg.trainer.get("save_every"))
    if cfg.get("resume") is not None and Path(cfg.resume).resolve() != run_dir.resolve():
        raise UserError(f"resume={cfg.resume} must be the run dir itself; run `prompttune train resume=DIR`")
    if previous is None or previous.status == "failed":
        snapshots.clear()
    elif previous.config_sha != config_sha(cfg):
        raise OtherRunsDir(f"{run_dir} holds a run of another config; give this run a dir of its own")
    elif snapshots.latest() is None:
        log.warning("%s has no resumable state (killed before its first save): training it afresh", run_dir)
    return snapshots


def run_train(cfg: DictConfig, run_dir: Path) -> RunRecord:
    """One method trained (or fitted) and tested in one run dir; plans of several runs (PET's ensemble) sit
    one level up, in prompttune.plans, and the train command chooses between them."""
    previous = RunRecord.read(run_dir)
    snapshots = resumable_snapshots(cfg, run_dir, previous)
    record = begin(cfg, "train", run_dir, previous)
    splits, setup = draw_splits(cfg, run_dir, unlabeled_size(cfg.method))
    note_facts(record, splits.facts)
    attach_unlabeled(setup.method, splits, cfg)
    log.info(
        "%s on %s with %s: %d train, %d dev, %d test",
        cfg.method.name,
        cfg.dataset.name,
        cfg.model.name,
        len(splits.train),
        len(splits.dev),
        len(splits.test),
    )
    if snapshots.latest() is not None:
        record.resumed_at_steps.append(int(snapshots.latest().stem))
        record.write(run_dir)
    method, train_set, dev_set = setup.method, setup.method.encode(splits.train), setup.method.encode(splits.dev)
    with tracking(cfg.get("logger"), run_dir, run_name(record)) as tracker:
        counter = FlopCounter(method) if method.backbone is not None else None  # tfidf has no transformer to count
        if method.trains:
            callback = TrackingCallback(tracker)
            result = train(method, train_set, dev_set, cfg.trainer, setup.device, int(cfg.seed), snapshots, callback)
        else:
            result = TrainResult.untrained(evaluate(method, dev_set, cfg.trainer, setup.device), setup.fit_seconds)
        if counter:
            counter.reset_eval()
        test, eval_seconds = evaluate_test(setup, splits.test, cfg.trainer, run_dir)
        if counter:
            counter.close()
        record_training(record, result, setup, splits, cfg, run_dir, counter, test, eval_seconds)
        log_final(tracker, cfg, record)
    snapshots.clear()  # a completed run needs no state: its checkpoint and metrics are final
    return record


def record_training(record, result, setup, splits, cfg, run_dir, counter, test, eval_seconds) -> None:
    method = setup.method
    size = save_checkpoint(run_dir, method.trainable_state(), cfg, method.fitted_json())
    record.status = "completed"
    record.dev, record.test, record.params = result.best_dev, test, setup.method.parameter_counts()
    record.steps, record.best_step, record.history = result.steps, result.best_step, result.history
    record.train_seconds, record.seconds_per_step = result.train_seconds, result.seconds_per_step
    record.train_examples_per_second = result.examples_per_second
    record.checkpoint_bytes, record.fit_seconds = size, setup.fit_seconds
    if counter:
        n_test = len(splits.test)
        steps_here = result.steps - (record.resumed_at_steps[-1] if record.resumed_at_steps else 0)
        record.extra["throughput"] = throughput(
            counter, result.steps, steps_here, result.train_seconds, n_test, eval_seconds
        )
    finish(record, setup, eval_seconds, len(splits.test), run_dir)


def finish(record: RunRecord, setup: Setup, eval_seconds: float, n_test: int, run_dir: Path) -> None:
    record.status = "completed"
    record.eval_seconds, record.eval_examples_per_second = eval_seconds, n_test / eval_seconds
    record.peak_memory_mb = peak_memory_mb(setup.device)
    record.extra["precision"] = setup.precision
    record.finished_at = now()
    record.write(run_dir)


def note_facts(record: RunRecord, facts: dict | None) -> None:
    """Fact probing: how many facts the relation has, kept for the model, per split (metrics.json `facts`)."""
    if facts:
        record.extra["facts"] = dict(facts)


def saved_facts(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "splits.json").read_text(encoding="utf-8")).get("facts")
    except (OSError, ValueError, AttributeError):  # load_split_examples says what is wrong with the file
        return None


def has_text_b(examples: list[Example]) -> bool:
    return any(e.text_b is not None for e in examples)


def run_eval(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> RunRecord:
    if cfg.run is not None:
        return _eval_trained(cfg, run_dir, overrides)
    record = begin(cfg, "eval", run_dir)
    splits, setup = draw_splits(cfg, run_dir)
    note_facts(record, splits.facts)
    if fitted := setup.method.fitted_json():  # e.g. the label words verbalizer=auto found
        write_json(run_dir / FITTED, fitted)
    return _finish_eval(record, setup, cfg, splits.dev, splits.test, run_dir)


EVAL_OVERRIDABLE = ("trainer.", "method.calibration", "run", "logger")


def check_eval_overrides(overrides: list[str]) -> None:
    """`eval run=DIR` takes the run's config: an override of anything else is an error naming it."""
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    rejected = [k for k in keys if not k.startswith(EVAL_OVERRIDABLE) and not k.startswith("hydra.")]
    if rejected:
        raise UserError(
            f"eval run=DIR takes {', '.join(rejected)} from the run; drop {'them' if len(rejected) > 1 else 'it'} "
            "(only trainer.*, method.calibration and logger may change)"
        )


def _eval_trained(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> RunRecord:
    check_eval_overrides(overrides)
    source_dir, trained_cfg, state = load_run(cfg.run)
    changes = [o for o in overrides if not o.startswith(("run=", "logger"))]
    merged = OmegaConf.merge(trained_cfg, OmegaConf.from_dotlist(changes), {"logger": cfg.get("logger")})
    # the job's own config is the fingerprint: it is what a sweep run again compares
    record = begin(merged, "eval", run_dir, source_run=str(source_dir), config_sha=config_sha(cfg))
    dev, test = load_split_examples(source_dir, "dev", merged), load_split_examples(source_dir, "test", merged)
    note_facts(record, saved_facts(source_dir))
    setup = build(merged, has_text_b(dev + test))
    load_checkpoint_into(setup.method, state, source_dir)
    setup.method.fit_examples(load_split_examples(source_dir, "train", merged), dev)
    return _finish_eval(record, setup, merged, dev, test, run_dir)


def _finish_eval(record: RunRecord, setup: Setup, cfg: DictConfig, dev, test, run_dir: Path) -> RunRecord:
    with tracking(cfg.get("logger"), run_dir, run_name(record)) as tracker:
        record.dev = evaluate(setup.method, setup.method.encode(dev), cfg.trainer, setup.device) if dev else None
        counter = FlopCounter(setup.method) if setup.method.backbone is not None else None  # tfidf: no transformer
        record.test, seconds = evaluate_test(setup, test, cfg.trainer, run_dir)
        if counter:
            counter.close()
            record.extra["throughput"] = throughput(counter, 0, 0, 0.0, len(test), seconds)
        record.params = setup.method.parameter_counts()
        finish(record, setup, seconds, len(test), run_dir)
        log_final(tracker, cfg, record)
    return record
