"""The method protocol: a config dataclass plus a module that maps a batch to class logits.

A method decides which template the examples go through, how the backbone is run (`hidden_states`, where
soft prompts enter), which parameters train, and what it learns from the training examples without the
gradient loop (`fit_examples`). Heads do the rest. A method that does not train (`trains = False`) skips the
loop; one that needs no language model (`uses_backbone = False`) is built without loading it.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods.heads import ClassificationHead, LinearHead, VerbalizerHead
from prompttune.models.backbone import Backbone, pick
from prompttune.models.families import EncoderDecoder
from prompttune.prompts import label_search
from prompttune.prompts.demonstrations import DemonstrationEncoder
from prompttune.prompts.encoding import EncodedExample, TemplateEncoder, collate
from prompttune.prompts.template import Template, parse_template
from prompttune.prompts.verbalizer import Reduce, Verbalizer
from prompttune.schema import Invalid, bounded

log = logging.getLogger(__name__)
AUTO = "auto"
SEARCH_BATCH = 16


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
    soft_tokens_allowed: ClassVar[bool] = False
    distill_temperature: float = 1.0  # the temperature of the soft labels it is distilled on, if any
    trains: ClassVar[bool] = True  # False: the gradient loop is skipped (0 steps)
    uses_backbone: ClassVar[bool] = True  # False: built with backbone=None, the model is never loaded

    def __init__(self, cfg: MethodConfig, backbone: Backbone | None, task: Task, max_length: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.task = task
        self.max_length = max_length
        # tokens for a query and its demonstrations: the query is cut to max_length, they share the rest
        self.context_length = max_length  # methods with demonstrations widen it in setup()
        self.restored = False  # True once a checkpoint is loaded: fit_examples keeps what it holds
        if backbone is not None:
            self.template = self._checked_template(self.template_source())
            self.head = self._build_head()
            if cfg.freeze_backbone:
                backbone.freeze()
        self.setup()

    # --- what subclasses override -------------------------------------------------------------
    def setup(self) -> None:
        """Create the method's own parameters (soft prompts, encoders)."""

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        """Receive the training examples before training or evaluation (demonstrations, closed-form fits).
        Called again on a restored method (`self.restored`), which keeps what its checkpoint gave it.
        Overrides call super() first: here verbalizer=auto searches its label words."""
        if self.cfg.verbalizer == AUTO and not self.restored:
            self._search_label_words(train, dev)

    def fitted_json(self) -> dict[str, Any]:
        """What fit_examples learnt that is not a tensor (saved as checkpoint/fitted.json)."""
        return dict(self.label_search) if self.cfg.verbalizer == AUTO else {}

    def load_fitted_json(self, fitted: dict[str, Any]) -> None:
        """Restore what fitted_json saved."""
        if self.cfg.verbalizer == AUTO:
            if not isinstance(fitted.get("label_words"), dict):
                raise UserError("the run has no searched label words (checkpoint/fitted.json); retrain it")
            self.label_search = fitted
            self.head = self._verbalizer_head(fitted["label_words"])

    def template_source(self) -> str:
        if self.cfg.template is not None:
            return self.cfg.template
        return self.pattern()["template"] if self.cfg.head == "verbalizer" else self.task.plain_template()

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask)

    def use_unlabeled(self, encoded: list[EncodedExample], batch_size: int) -> None:
        """Unlabeled texts, put through the template, for a method that learns from them too (PET's LM loss)."""

    def prompt_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at trainer.prompt_lr (soft prompts and their encoders)."""
        return []

    def demonstrations(self, examples: list[Example]) -> list[list[Example]] | None:
        """The training examples put in each example's context, as the pattern filled with their label word;
        None: no demonstrations."""
        return None

    def demonstrations_after_query(self) -> bool:
        """LM-BFF appends demonstrations after the query on masked LMs; a causal LM reads them before it."""
        return not self.backbone.cut_at_mask

    # --- shared machinery ---------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.backbone.segment_ids(batch.get("token_type_ids")):
            return self.head(self.hidden_states, batch)

    @property
    def pad_token_id(self) -> int:
        return self.backbone.tokenizer.pad_token_id

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
        return F.cross_entropy(logits, batch["labels"])

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
        encoder = TemplateEncoder(self.template, tokenizer, family, self.max_length, mask_tokens)
        demonstrations = self.demonstrations(examples)
        if demonstrations is None:
            return encoder.encode(examples)
        words, separator = self.head.verbalizer.first_words(), self._demonstration_separator()
        after_query, budget = self.demonstrations_after_query(), self.context_length - self.max_length
        return DemonstrationEncoder(encoder, words, separator, after_query, budget).encode(examples, demonstrations)

    def _demonstration_context(self, wanted: int, key: str) -> int:
        """`wanted` tokens for a query and its demonstrations, or as many as the backbone has positions for (with
        a warning naming `key`); an error when that leaves the demonstrations no room beside the query."""
        limit = getattr(self.backbone.model.config, "max_position_embeddings", None) or wanted
        if wanted > limit:
            log.warning("%s=%d exceeds what %s reads (%d); using %d", key, wanted, self.backbone.name, limit, limit)
        context = min(wanted, limit)
        if context <= self.max_length:
            raise UserError(
                f"{key}={context} leaves no room for demonstrations beside a query of "
                f"model.max_length={self.max_length} tokens; raise {key} or lower model.max_length"
            )
        return context

    def _demonstration_separator(self) -> list[int]:
        tokenizer = self.backbone.tokenizer
        if not self.backbone.cut_at_mask and tokenizer.sep_token_id is not None:
            return [tokenizer.sep_token_id]
        return tokenizer("\n", add_special_tokens=False)["input_ids"]

    def content_free_examples(self) -> list[Example]:
        """The inputs of contextual calibration (Zhao et al. 2021): "N/A", "" and the mask token, in every
        text slot (a tokenizer without a mask token gets the literal "[MASK]", as Zhao et al. gave GPT-3)."""
        mask = self.backbone.tokenizer.mask_token or "[MASK]"
        texts = ["N/A", "", mask]
        return [Example(f"content-free-{i}", t, 0, t if self.task.has_text_b else None) for i, t in enumerate(texts)]

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
        if words == AUTO:
            words = self.pattern()["verbalizer"]  # until fit_examples has searched
        return self._verbalizer_head(words)

    def _verbalizer_head(self, words: dict[str, list[str]]) -> VerbalizerHead:
        verbalizer = Verbalizer(
            {k: list(v) for k, v in words.items()},
            self.task.labels,
            self.backbone.tokenizer,
            space_before=self.template.space_before_mask,
            reduce=self.cfg.verbalizer_reduce,
        )
        return VerbalizerHead(self.backbone, verbalizer)

    def _search_label_words(self, train: list[Example], dev: list[Example]) -> None:
        if isinstance(self.backbone, EncoderDecoder):
            raise UserError(
                "method.verbalizer=auto scores words at the mask of masked and causal LMs, not T5's decoder; "
                "give T5 its words"
            )
        tokenizer, space = self.backbone.tokenizer, self.template.space_before_mask
        train_lp, dev_lp = self._mask_log_probs(train), self._mask_log_probs(dev)
        train_labels, dev_labels = torch.tensor([e.label for e in train]), torch.tensor([e.label for e in dev])
        n_labels, k = len(self.task.labels), self.cfg.auto_candidates
        per_class = label_search.candidates(train_lp, train_labels, n_labels, tokenizer, space, k, self.task.unspaced)
        ranked = label_search.search(train_lp, train_labels, dev_lp, dev_labels, per_class, self.cfg.auto_assignments)

        def words(assignment) -> dict[str, list[str]]:
            texts = tokenizer.batch_decode([[t] for t in assignment.token_ids])
            return {label: [text.strip()] for label, text in zip(self.task.labels, texts, strict=True)}

        top = [
            {"label_words": words(a), "train_accuracy": a.train_accuracy, "dev_accuracy": a.dev_accuracy}
            for a in ranked[:10]
        ]
        self.label_search = {
            **top[0],
            "candidates": [tokenizer.batch_decode([[t] for t in c]) for c in per_class],
            "top": top,
        }
        self.head = self._verbalizer_head(top[0]["label_words"])
        log.info(
            "label words found: %s (train %.3f, dev %.3f)",
            top[0]["label_words"],
            top[0]["train_accuracy"],
            top[0]["dev_accuracy"],
        )

    @torch.no_grad()
    def _mask_log_probs(self, examples: list[Example]) -> torch.Tensor:
        """The vocabulary's log-probabilities at the mask of every example through the template, [N, V]."""
        encoder = TemplateEncoder(self.template, self.backbone.tokenizer, type(self.backbone), self.max_length)
        encoded = encoder.encode(examples)
        device, was_training = self.backbone.embeddings.weight.device, self.training
        self.eval()
        out = []
        for start in range(0, len(encoded), SEARCH_BATCH):
            batch = {
                k: v.to(device) for k, v in collate(encoded[start : start + SEARCH_BATCH], self.pad_token_id).items()
            }
            hidden = self.hidden_states(batch["input_ids"], batch["attention_mask"], batch["soft_positions"])
            out.append(self.backbone.lm_log_probs(pick(hidden, batch["mask_positions"][:, :1]))[:, 0].cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.backbone.tokenizer))

    def param_groups(self, lr: float, prompt_lr: float, weight_decay: float) -> list[dict]:
        """Backbone (and head) at method.lr or trainer.lr; prompts at method.prompt_lr or trainer.prompt_lr; the
        head at method.head_lr where set."""
        prompt = [p for p in self.prompt_parameters() if p.requires_grad]
        head = [p for p in self.head.parameters() if p.requires_grad] if self.cfg.head_lr else []
        apart = {id(p) for p in prompt + head}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in apart]
        groups = [
            {"name": "model", "params": rest, "lr": self.cfg.lr or lr, "weight_decay": weight_decay},
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


class SoftPromptMethod(Method):
    """A method that trains soft tokens placed at the template's {soft} slots (trained at trainer.prompt_lr)."""

    soft_tokens_allowed = True
