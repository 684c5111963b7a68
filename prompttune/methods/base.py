"""The method protocol: a config dataclass plus a module that maps a batch to class logits.

A method decides three things: which template the examples go through, how the backbone is run
(`hidden_states`, where soft prompts enter), and which parameters train. Heads do the rest.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import torch
from omegaconf import MISSING
from torch import nn

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods.heads import ClassificationHead, LinearHead, VerbalizerHead
from prompttune.models.backbone import Backbone
from prompttune.prompts.encoding import EncodedExample, TemplateEncoder
from prompttune.prompts.template import Template, parse_template
from prompttune.prompts.verbalizer import Reduce, Verbalizer
from prompttune.schema import Invalid, bounded


class Head(StrEnum):
    verbalizer = "verbalizer"  # label words' scores at the mask / next token
    linear = "linear"  # a new linear classifier on one token
    classification = "classification"  # the head AutoModelForSequenceClassification gives the family


class Calibration(StrEnum):
    none = "none"
    contextual = "contextual"  # Zhao et al. 2021, applied when evaluating


@dataclass
class MethodConfig:
    """The keys every method shares; a method's own config subclasses it (its schema in the `method` group)."""

    name: str = MISSING
    head: Head = Head.verbalizer
    pattern_id: int = bounded(0, ge=0)  # which of the dataset's patterns
    template: str | None = None  # overrides the pattern's template
    # Overrides the pattern's verbalizer: {label: [words]}. Typed Any, checked in check(): OmegaConf 2.3 cannot
    # merge a mapping from the command line into a typed dict field whose value is null.
    verbalizer: Any = None
    verbalizer_reduce: Reduce = Reduce.mean  # how a label's several words combine
    calibration: Calibration = Calibration.none
    freeze_backbone: bool = False
    lr: float | None = bounded(None, ge=0)  # backbone and head learning rate; null: trainer.lr
    prompt_lr: float | None = bounded(None, ge=0)  # soft-prompt parameters' learning rate; null: trainer.prompt_lr
    head_lr: float | None = bounded(None, ge=0)  # a linear/classification head's own learning rate; null: lr

    def check(self) -> None:
        if self.verbalizer is not None and not is_word_lists(self.verbalizer):
            raise Invalid("verbalizer", self.verbalizer, "null or {label: [word, ...]} with non-empty words")


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

    def plain_template(self) -> str:
        return "{text_a}{sep} {text_b}" if self.has_text_b else "{text_a}"


class Method(nn.Module):
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    soft_tokens_allowed: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig, backbone: Backbone, task: Task, max_length: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.task = task
        self.max_length = max_length
        self.template = self._checked_template(self.template_source())
        self.head = self._build_head()
        if cfg.freeze_backbone:
            backbone.freeze()
        self.setup()

    # --- what subclasses override -------------------------------------------------------------
    def setup(self) -> None:
        """Create the method's own parameters (soft prompts, encoders)."""

    def template_source(self) -> str:
        if self.cfg.template is not None:
            return self.cfg.template
        return self.pattern()["template"] if self.cfg.head == "verbalizer" else self.task.plain_template()

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask)

    def prompt_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at trainer.prompt_lr (soft prompts and their encoders)."""
        return []

    # --- shared machinery ---------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.backbone.segment_ids(batch.get("token_type_ids")):
            return self.head(self.hidden_states, batch)

    def pattern(self) -> dict[str, Any]:
        patterns = self.task.patterns
        if self.cfg.pattern_id >= len(patterns):
            raise UserError(
                f"method.pattern_id={self.cfg.pattern_id} but dataset {self.task.name} has {len(patterns)} "
                f"patterns; use 0..{len(patterns) - 1}"
            )
        return patterns[self.cfg.pattern_id]

    def encode(self, examples: list[Example]) -> list[EncodedExample]:
        mask_tokens = self.head.verbalizer.max_tokens if isinstance(self.head, VerbalizerHead) else 1
        family, tokenizer = type(self.backbone), self.backbone.tokenizer
        return TemplateEncoder(self.template, tokenizer, family, self.max_length, mask_tokens).encode(examples)

    def content_free_example(self) -> Example:
        """The input of contextual calibration: `N/A` in every text slot."""
        return Example("content-free", "N/A", 0, "N/A" if self.task.has_text_b else None)

    def _checked_template(self, source: str) -> Template:
        template = parse_template(source)
        if "text_b" in template.text_slots and not self.task.has_text_b:
            raise UserError(f"template {source!r} uses {{text_b}} but dataset {self.task.name} has only text_a")
        if self.cfg.head == "verbalizer" and not template.has_mask:
            raise UserError(f"template {source!r} has no {{mask}}, which the verbalizer head needs; add one")
        if template.n_soft and not self.soft_tokens_allowed:
            raise UserError(
                f"template {source!r} has soft tokens but method={self.cfg.name} trains none; "
                "use method=prompt_tuning or ptuning_v1, or drop the {soft} slots"
            )
        return template

    def _build_head(self) -> nn.Module:
        if self.cfg.head == "linear":
            return LinearHead(self.backbone, len(self.task.labels))
        if self.cfg.head == "classification":
            return ClassificationHead(self.backbone, len(self.task.labels))
        words = self.cfg.verbalizer or self.pattern()["verbalizer"]
        verbalizer = Verbalizer(
            {k: list(v) for k, v in words.items()},
            self.task.labels,
            self.backbone.tokenizer,
            space_before=self.template.space_before_mask,
            reduce=self.cfg.verbalizer_reduce,
        )
        return VerbalizerHead(self.backbone, verbalizer)

    def param_groups(self, lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """Backbone (and head) at method.lr or trainer.lr; prompts at method.prompt_lr or trainer.prompt_lr; the
        head at method.head_lr where set."""
        prompt = [p for p in self.prompt_parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad] if self.cfg.head_lr else []
        apart = {id(p) for p in prompt + head}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in apart]
        groups = [
            {"params": rest, "lr": self.cfg.lr or lr, "weight_decay": weight_decay},
            {"params": head, "lr": self.cfg.head_lr, "weight_decay": weight_decay},
            {"params": prompt, "lr": self.cfg.prompt_lr or prompt_lr, "weight_decay": 0.0},
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
        return {"trainable": trainable, "total": total, "ratio": trainable / total}


class SoftPromptMethod(Method):
    """A method that trains soft tokens placed at the template's {soft} slots (trained at trainer.prompt_lr)."""

    soft_tokens_allowed = True
