"""PET's ensemble and distillation (Schick & Schütze 2021, section 3.1; `train_pet` in timoschick/pet):
`prompttune train method=pet method.mode=ensemble`.

1. One PET model per pattern of the dataset, each a single run of `method=pet` (with its auxiliary LM loss).
2. Their class logits are averaged, weighted by each model's dev accuracy (the issue's choice;
   `ensemble_weights=train_before` is the reference code's `wmean`: accuracy on the training set before
   training; `uniform` is its `mean`).
3. The ensemble's logits on the unlabeled pool, at temperature T, are the soft labels a final model is
   distilled on, with PET's loss: KL at T, times T². As in PET, the final model trains on the soft-labelled
   pool only; by default it is a sequence classifier (`method=finetune`'s model and head), or a PET model.

The run dir keeps every pattern's metrics and the ensemble's in metrics.json, all logits in
ensemble_logits.safetensors, and the distilled model's checkpoint: its test metrics are the run's.

`mode: ipet` (section 3.3; `train_ipet`): `ipet_generations` generations in all (3, as PET's default), the first
being the ensemble above; each later one retrains every pattern's model on the train set plus texts of the pool
labelled by a random `ipet_share` (0.25) of the previous generation's other models, `ipet_scale` (5) times as
many examples per generation. The last generation is ensembled and distilled; metrics.json keeps the earlier
ones under `generations`. PET's `n_most_likely` option is not offered.
"""

import copy
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import save

from prompttune.data import Splits
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.files import write_atomically
from prompttune.methods import method_config
from prompttune.methods.pet import PetConfig
from prompttune.runs.checkpoint import now, save_checkpoint
from prompttune.runs.lifecycle import (
    attach_unlabeled,
    begin,
    build,
    draw_split,
    evaluate_test,
    has_text_b,
    pick_device,
)
from prompttune.runs.probes import peak_memory_mb
from prompttune.runs.record import RunRecord
from prompttune.training.loop import TrainResult, class_logits, evaluate, train
from prompttune.training.metrics import classification_metrics

log = logging.getLogger(__name__)
SCORED = ("dev", "test", "unlabeled")
LOGITS_FILE = "ensemble_logits.safetensors"
# the run's own metrics are the distilled model's
DISTILLED_AT_TOP = ("dev", "test", "params", "steps", "best_step", "checkpoint_bytes", "eval_seconds")
DISTILLED_AT_TOP += ("eval_examples_per_second",)


@dataclass
class Member:
    """One pattern's trained model, kept as its logits on dev, test and the unlabeled pool."""

    pattern_id: int
    result: TrainResult
    logits: dict[str, torch.Tensor]
    train_accuracy_before: float | None
    seconds: float
    params: dict[str, float]

    def weight(self, scheme: str) -> float:
        if scheme == "dev":
            return self.result.best_dev["accuracy"]
        if scheme == "train_before":
            return self.train_accuracy_before
        return 1.0


def run_ensemble(cfg: DictConfig, run_dir: Path) -> RunRecord:
    record = begin(cfg, "train", run_dir)
    pet = method_config(cfg.method)
    splits = draw_split(cfg, run_dir, pet.unlabeled_size)
    if not splits.unlabeled:
        raise UserError(
            f"method.mode={pet.mode} needs unlabeled texts but dataset {cfg.dataset.name} has none beyond the "
            "few-shot split (or method.unlabeled_size=0); use method.mode=single or a dataset with a training pool"
        )
    text_b = has_text_b(splits.train + splits.dev + splits.test)
    members = [train_member(cfg, pattern_id, splits, text_b) for pattern_id in pattern_ids(pet, cfg)]
    earlier = []
    for generation in range(1, pet.ipet_generations if pet.mode == "ipet" else 1):
        earlier.append(members)
        members = next_generation(cfg, pet, members, splits, text_b, generation)
    weights = ensemble_weights(members, pet.ensemble_weights)
    ensemble = {split: weighted_logits([m.logits[split] for m in members], weights) for split in SCORED}
    soft = soft_labels(ensemble["unlabeled"], pet.temperature)
    save_logits(run_dir / LOGITS_FILE, members, ensemble, soft)
    distilled = distill(cfg, pet, splits, soft, text_b, run_dir)
    gold = {split: labels_of(getattr(splits, split)) for split in ("dev", "test")}
    n_labels = len(splits.labels)
    for key in DISTILLED_AT_TOP:
        setattr(record, key, distilled[key])
    record.train_seconds = sum(m.seconds for g in [*earlier, members] for m in g) + distilled["train_seconds"]
    record.peak_memory_mb = peak_memory_mb(pick_device(cfg.trainer.device))
    record.extra |= dict(
        mode=pet.mode,
        patterns=[member_summary(m, w, gold, n_labels) for m, w in zip(members, weights.tolist(), strict=True)],
        generations=[[member_summary(m, None, gold, n_labels) for m in generation] for generation in earlier],
        ensemble={
            "weights": weights.tolist(),
            "weighting": pet.ensemble_weights,
            **{s: classification_metrics(ensemble[s], gold[s], n_labels) for s in gold},
        },
        distilled=distilled,
        unlabeled=len(splits.unlabeled),
    )
    record.status, record.finished_at = "completed", now()
    record.write(run_dir)
    return record


def pattern_ids(pet: PetConfig, cfg: DictConfig) -> list[int]:
    n_patterns = len(cfg.dataset.patterns)
    chosen = list(range(n_patterns)) if pet.ensemble_patterns is None else list(pet.ensemble_patterns)
    if not chosen or any(not 0 <= i < n_patterns for i in chosen):
        raise UserError(
            f"method.ensemble_patterns={chosen} must name some of dataset {cfg.dataset.name}'s patterns "
            f"0..{n_patterns - 1} (null: all)"
        )
    return chosen


def with_method(cfg: DictConfig, method: dict) -> DictConfig:
    """The config with its method node replaced."""
    changed = copy.deepcopy(cfg)
    with open_dict(changed):
        changed.method = OmegaConf.create(method)
    return changed


def train_member(
    cfg: DictConfig, pattern_id: int, splits: Splits, text_b: bool, labelled_by_others: list[Example] = ()
) -> Member:
    """A single PET run on one pattern (on the few-shot train set, plus iPET's examples labelled by the other
    models), kept as its logits (the model is freed afterwards)."""
    started = time.perf_counter()
    member_cfg = with_method(cfg, {**OmegaConf.to_container(cfg.method), "pattern_id": pattern_id, "mode": "single"})
    setup = build(member_cfg, text_b)
    method, device = setup.method, setup.device
    method.fit_examples(splits.train, splits.dev)
    train_set = method.encode(splits.train)
    before = None
    if method.cfg.ensemble_weights == "train_before":
        before = evaluate(method, train_set, cfg.trainer, device)["accuracy"]
    attach_unlabeled(method, splits, member_cfg)
    log.info("ensemble: pattern %d", pattern_id)
    extra = method.encode(list(labelled_by_others)) if labelled_by_others else []
    result = train(method, train_set + extra, method.encode(splits.dev), cfg.trainer, device, int(cfg.seed))
    logits = {s: class_logits(method, method.encode(getattr(splits, s)), cfg.trainer, device) for s in SCORED}
    return Member(pattern_id, result, logits, before, time.perf_counter() - started, method.parameter_counts())


def next_generation(
    cfg: DictConfig, pet: PetConfig, members: list[Member], splits: Splits, text_b: bool, generation: int
) -> list[Member]:
    """iPET: each pattern's model again, from the pretrained weights, on the train set plus unlabeled texts
    labelled by a random share of the other models of the previous generation; the set grows by ipet_scale."""
    rng = torch.Generator().manual_seed(int(cfg.seed) * 1000 + generation)
    n_new = int(len(splits.train) * pet.ipet_scale**generation) - len(splits.train)
    quotas = label_quotas([e.label for e in splits.train], len(splits.labels), n_new)
    return [
        train_member(cfg, m.pattern_id, splits, text_b, labelled_by_others(m, members, pet, splits, quotas, rng))
        for m in members
    ]


def label_quotas(train_labels: list[int], n_labels: int, total: int) -> list[int]:
    """New examples per label, in the proportions of the train set (PET: int(count * total / len(train)))."""
    return [int(train_labels.count(label) * total / len(train_labels)) for label in range(n_labels)]


def labelled_by_others(
    member: Member, members: list[Member], pet: PetConfig, splits: Splits, quotas: list[int], rng: torch.Generator
) -> list[Example]:
    """PET's generate_ipet_train_set: the weighted ensemble of round(share · others) other models labels the
    pool; per label, `quota` texts it assigns to that label are drawn without replacement with probability
    proportional to the label's probability (texts repeated first when there are too few)."""
    others = [m for m in members if m is not member]
    chosen = [others[i] for i in torch.randperm(len(others), generator=rng)[: round(len(others) * pet.ipet_share)]]
    if not chosen:
        return []
    weights = ensemble_weights(chosen, pet.ensemble_weights)
    probs = soft_labels(weighted_logits([m.logits["unlabeled"] for m in chosen], weights), 1.0)
    confidence, predicted = probs.max(-1)
    drawn = []
    for label, quota in enumerate(quotas):
        candidates = (predicted == label).nonzero().flatten()
        if quota < 1 or len(candidates) == 0:
            continue
        candidates = candidates.repeat(-(-quota // len(candidates)))  # ceil: enough to draw from
        picks = torch.multinomial(confidence[candidates], quota, replacement=False, generator=rng)
        drawn += [replace(splits.unlabeled[i], label=label) for i in candidates[picks].tolist()]
    return drawn


def ensemble_weights(members: list[Member], scheme: str) -> torch.Tensor:
    weights = torch.tensor([m.weight(scheme) for m in members], dtype=torch.float)
    return weights if weights.sum() > 0 else torch.ones_like(weights)  # every model at 0%: plain mean


def weighted_logits(logits: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """PET's `wmean`: the weighted average of the models' class logits ([N, C] each)."""
    return torch.einsum("m,mnc->nc", weights, torch.stack(logits)) / weights.sum()


def soft_labels(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


def labels_of(examples) -> torch.Tensor:
    return torch.tensor([e.label for e in examples])


def member_summary(member: Member, weight: float | None, gold: dict, n_labels: int) -> dict:
    result = member.result
    return {
        "pattern_id": member.pattern_id,
        "weight": weight,
        "train_accuracy_before": member.train_accuracy_before,
        **{s: classification_metrics(member.logits[s], gold[s], n_labels) for s in gold},
        "params": member.params,
        "steps": result.steps,
        "best_step": result.best_step,
        "train_seconds": result.train_seconds,
        "seconds_per_step": result.seconds_per_step,
        "history": result.history,
    }


def student_method(cfg: DictConfig, pet: PetConfig) -> dict:
    if pet.distill_into == "finetune":
        return {"name": "finetune", "head_lr": pet.distill_head_lr}
    return {**OmegaConf.to_container(cfg.method), "mode": "single", "lm_weight": 0.0}


def distill(cfg: DictConfig, pet: PetConfig, splits: Splits, soft: torch.Tensor, text_b: bool, run_dir: Path) -> dict:
    """Train the final model on the soft-labelled pool only (as PET), best on dev; save its checkpoint."""
    student_cfg = with_method(cfg, student_method(cfg, pet))
    overrides = {"max_steps": pet.distill_steps or cfg.trainer.max_steps, "lr": pet.distill_lr or cfg.trainer.lr}
    with open_dict(student_cfg):
        student_cfg.trainer = OmegaConf.merge(cfg.trainer, overrides)
    setup = build(student_cfg, text_b)
    student, device = setup.method, setup.device
    student.fit_examples(splits.train, splits.dev)
    student.distill_temperature = pet.temperature
    encoded = student.encode(splits.unlabeled)
    pool = [replace(e, soft_label=tuple(q)) for e, q in zip(encoded, soft.tolist(), strict=True)]
    log.info("ensemble: distilling into %s on %d soft-labelled texts", pet.distill_into, len(pool))
    result = train(student, pool, student.encode(splits.dev), student_cfg.trainer, device, int(cfg.seed))
    test, eval_seconds = evaluate_test(setup, splits.test, cfg.trainer, run_dir)
    size = save_checkpoint(run_dir, student.trainable_state(), student_cfg, student.fitted_json())
    return {
        "method": pet.distill_into,
        "dev": result.best_dev,
        "test": test,
        "params": student.parameter_counts(),
        "steps": result.steps,
        "best_step": result.best_step,
        "train_seconds": result.train_seconds,
        "seconds_per_step": result.seconds_per_step,
        "checkpoint_bytes": size,
        "eval_seconds": eval_seconds,
        "eval_examples_per_second": len(splits.test) / eval_seconds,
        "history": result.history,
    }


def save_logits(path: Path, members: list[Member], ensemble: dict, soft: torch.Tensor) -> None:
    tensors = {f"pattern{m.pattern_id}/{s}": m.logits[s] for m in members for s in SCORED}
    tensors |= {f"ensemble/{s}": logits for s, logits in ensemble.items()}
    tensors["soft_labels"] = soft
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    write_atomically(path, lambda handle: handle.write(save(tensors, metadata={"format": "pt"})))
