"""The method protocol every method honours, with or without a language model (scikit-learn's estimator
protocol is the model: small, and every learner honours it).

A method is a config dataclass (its module's `MethodConfig` subclass, the schema of `configs/method/<name>.yaml`)
and an `nn.Module` that:
- receives the training examples before the gradient loop (`fit_examples`: closed-form fits, demonstrations,
  label-word search) and saves what it learnt there that is not a tensor (`fitted_json` / `load_fitted_json`);
- turns examples into encoded rows (`encode`) and a collated batch into scores (`forward`: class logits for a
  classification task), with the loss it trains on (`training_loss`);
- says which parameters train and at which rate (`param_groups`, `prompt_parameters`) and saves them
  (`trainable_state` / `load_trainable_state`);
- declares whether it trains at all (`trains`) and whether it needs a language model (`uses_backbone`).

What methods on a language model share (template, verbalizer, label-word search, demonstrations, the inputs of
contextual calibration) is one layer up, in `prompttune.methods.prompted`; `tfidf` implements only this core.
The task it is built for (`Task.kind`) decides what its scores mean and how they are measured.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from prompttune.config.schema import Invalid, bounded
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.models.backbone import Backbone
from prompttune.prompts.encoding import IGNORED, EncodedExample
from prompttune.prompts.verbalizer import Reduce

log = logging.getLogger(__name__)
AUTO = "auto"
CLASSIFICATION = "classification"  # the task kind of every dataset so far: one label per example
# and TOKEN_CLASSIFICATION (data/tagging.py): one tag per word of a sentence (methods/tagging.py); FACT_PROBING
# (data/facts.py): a fact's object as one token at the pattern's mask (methods/probing.py)


class Head(StrEnum):
    verbalizer = "verbalizer"  # label words' scores at the mask / next token
    linear = "linear"  # a new linear classifier on one token
    classification = "classification"  # the head AutoModelForSequenceClassification gives the family


class Calibration(StrEnum):
    none = "none"
    contextual = "contextual"  # Zhao et al. 2021, applied when testing (and on dev with calibrate_dev)


@dataclass
class MethodConfig:
    """The keys every method shares; a method's own config subclasses it (its schema in the `method` group)."""

    name: str = MISSING
    head: Head = Head.verbalizer
    pattern_id: int = bounded(0, ge=0)  # which of the dataset's patterns
    template: str | None = None  # overrides the pattern's template
    # Overrides the pattern's verbalizer: {label: [words]}, or auto (LM-BFF's search). Typed Any, checked in
    # check(): OmegaConf 2.3 cannot merge a mapping from the command line into a typed dict field set to null.
    verbalizer: Any = None
    auto_candidates: int = bounded(100, ge=1)  # verbalizer=auto: whole-word candidates per class
    auto_assignments: int = bounded(100, ge=1)  # verbalizer=auto: assignments kept by train accuracy, re-ranked on dev
    verbalizer_reduce: Reduce = Reduce.mean  # how a label's several words combine
    calibration: Calibration = Calibration.none  # contextual: verbalizer heads only
    calibrate_dev: bool = False  # also calibrate dev evaluations, and so the choice of the best checkpoint
    freeze_backbone: bool = False
    lr: float | None = bounded(None, ge=0)  # backbone and head learning rate; null: trainer.lr
    prompt_lr: float | None = bounded(None, ge=0)  # soft-prompt parameters' learning rate; null: trainer.prompt_lr
    head_lr: float | None = bounded(None, ge=0)  # a linear/classification head's own learning rate; null: lr

    def unlabeled_texts(self) -> int:
        """How many unlabeled texts of the training pool (outside the few-shot split) the method learns from."""
        return 0

    def soft_input_tokens(self) -> int:
        """The fewest input positions the method's soft tokens take (text and soft tokens share
        model.max_length); checked before anything is built."""
        return 0

    def check(self) -> None:
        if self.verbalizer is not None and self.verbalizer != AUTO and not is_word_lists(self.verbalizer):
            raise Invalid("verbalizer", self.verbalizer, "null, auto or {label: [word, ...]} with non-empty words")
        if self.calibration == Calibration.contextual and self.head != Head.verbalizer:
            raise Invalid(
                "calibration", self.calibration, "none with this head (contextual needs head=verbalizer's label words)"
            )


def is_word_lists(value: Any) -> bool:
    """{label: [word, ...]} with one or more non-empty words per label."""
    return isinstance(value, dict) and all(
        isinstance(words, list) and words and all(isinstance(w, str) and w.strip() for w in words)
        for words in value.values()
    )


@dataclass(frozen=True)
class Task:
    """What a method needs to know of the dataset."""

    name: str
    labels: list[str]
    patterns: list[dict[str, Any]]
    has_text_b: bool
    language: str = "en"
    seed: int = 13  # the run's seed: demonstrations and other draws from the training split use it
    kind: str = CLASSIFICATION  # what one example asks for; heads and metrics follow it
    instruction: str | None = None  # the task in words, for instruction-tuned models (icl with chat=true)
    candidates: str = "vocabulary"  # fact_probing: the answer ranked over the vocabulary, or the relation's objects

    @property
    def unspaced(self) -> bool:
        """Chinese and Japanese: words are not separated by spaces."""
        return self.language in ("zh", "ja")

    def plain_template(self) -> str:
        return "{text_a}{sep} {text_b}" if self.has_text_b else "{text_a}"


def distillation_loss(logits: torch.Tensor, soft_labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """PET's distillation loss: KL(teacher || student) with the student's logits at the temperature, scaled by
    T² (soft_labels are the teacher's distribution, already at the temperature); mean over the batch."""
    log_student = F.log_softmax(logits / temperature, dim=-1)
    return F.kl_div(log_student, soft_labels, reduction="batchmean") * temperature**2


class Method(nn.Module):
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    distill_temperature: float = 1.0  # the temperature of the soft labels it is distilled on, if any
    trains: ClassVar[bool] = True  # False: the gradient loop is skipped (0 steps)
    uses_backbone: ClassVar[bool] = True  # False: built with backbone=None, the model is never loaded
    # The task kinds (Task.kind, dataset.task) it can be built for; validate() stops any other with one line
    task_kinds: ClassVar[frozenset[str]] = frozenset({CLASSIFICATION})

    def __init__(self, cfg: MethodConfig, backbone: Backbone | None, task: Task, max_length: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.task = task
        self.max_length = max_length
        self.restored = False  # True once a checkpoint is loaded: fit_examples keeps what it holds
        self.prepare()
        self.setup()

    # --- what a layer or a method overrides ---------------------------------------------------
    def prepare(self) -> None:
        """What a layer of methods builds before the method's own setup (prompted methods: template, head)."""

    def setup(self) -> None:
        """Create the method's own parameters (soft prompts, encoders)."""

    def see_unlabeled(self, texts: list[Example]) -> None:
        """The unlabeled pool (`MethodConfig.unlabeled_texts` of them; labels never read), before fit_examples."""

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        """Receive the training examples before training or evaluation (demonstrations, closed-form fits).
        Called again on a restored method (`self.restored`), which keeps what its checkpoint gave it."""

    def fitted_json(self) -> dict[str, Any]:
        """What fit_examples learnt that is not a tensor (saved as checkpoint/fitted.json)."""
        return {}

    def load_fitted_json(self, fitted: dict[str, Any]) -> None:
        """Restore what fitted_json saved."""

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def pad_token_id(self) -> int:
        return 0

    def use_unlabeled(self, encoded: list[EncodedExample], batch_size: int) -> None:
        """Unlabeled texts, put through the template, for a method that learns from them too (PET's LM loss)."""

    def prompt_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at trainer.prompt_lr (soft prompts and their encoders)."""
        return []

    # --- shared machinery ---------------------------------------------------------------------
    def restore(self, state: dict[str, torch.Tensor], fitted: dict[str, Any]) -> None:
        """Load a training run's checkpoint: its tensors and what fit_examples learnt."""
        self.load_fitted_json(fitted)
        self.load_trainable_state(state)
        self.restored = True

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the training loop minimises: cross-entropy on the labels, or the distillation loss on soft
        labels when the batch has them."""
        logits = self(batch).float()
        if "soft_labels" in batch:
            return distillation_loss(logits, batch["soft_labels"], self.distill_temperature)
        # [B, C] and [B]; a tagging head's [B, W, C] and [B, W] (IGNORED where there is no word) alike
        return F.cross_entropy(logits.flatten(0, -2), batch["labels"].flatten(), ignore_index=IGNORED)

    def param_groups(self, lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """Backbone (and head) at method.lr or trainer.lr; prompts at method.prompt_lr or trainer.prompt_lr; the
        head at method.head_lr where set; the backbone's own weights scaled by model.lr_scale where it is not 1
        (a group of their own then, so a run at scale 1 keeps the groups its saved optimizer state has)."""
        prompt = [p for p in self.prompt_parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad] if self.cfg.head_lr else []
        apart = {id(p) for p in prompt + head}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in apart]
        scale = self.backbone.lr_scale if self.backbone is not None else 1.0
        own = {id(p) for p in self.backbone.parameters()} if scale != 1.0 else set()
        lr = self.cfg.lr or lr
        groups = [
            {"name": "model", "params": [p for p in rest if id(p) not in own], "lr": lr, "weight_decay": weight_decay},
            {
                "name": "backbone",
                "params": [p for p in rest if id(p) in own],
                "lr": lr * scale,
                "weight_decay": weight_decay,
            },
            {"name": "head", "params": head, "lr": self.cfg.head_lr, "weight_decay": weight_decay},
            {"name": "prompt", "params": prompt, "lr": self.cfg.prompt_lr or prompt_lr, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state())
        if set(state) != expected:
            raise UserError(
                "the checkpoint's parameters do not match this method and model "
                f"({len(set(state) ^ expected)} names differ); evaluate it with the config it was trained with"
            )
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def parameter_counts(self) -> dict[str, float]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": trainable, "total": total, "ratio": trainable / total if total else 0.0}
