"""PET (Schick & Schütze 2021): a pattern turns the input into a cloze, a verbalizer maps labels to words.

Class logits are the label words' log-probabilities at the mask (MLM) or after the pattern (causal LM).
The whole model trains by default; with freeze_backbone only the LM head's own parameters do (for BERT,
its transform and bias: the classifier over the vocabulary), which needs a head not tied away entirely.

Auxiliary language modelling (PET's `--lm_training`): each step also takes a batch of unlabeled texts, put
through the pattern as PET does, and adds their LM loss: loss = (1 - lm_weight) · CE + lm_weight · LM, where
lm_weight is the paper's α (1e-4; the reference code's `alpha` is 1 - α). The loss is the model family's
(`models/families.py`): on an MLM PET's own (15% of the non-special tokens chosen; 80% of them become [MASK],
10% a random token, 10% stay); PET has none for causal LMs (its code raises NotImplemented for its other
non-MLM family, XLNet), so here it is the next-token loss over every real token of the unlabeled batch. T5's
span-corruption objective is not implemented: on T5, PET trains without the auxiliary loss (a warning says so).

`mode: ensemble` / `ipet` (one model per pattern, their dev-weighted ensemble soft-labelling the unlabeled pool, and a
final classifier distilled on it) is orchestrated by `prompttune/ensemble.py` around single runs of this method.

With `demonstrations: true` (LM-BFF, Gao et al. 2021) each example's context also holds one training example
of each label, written as the pattern filled with its label word and drawn for that example from the train
split (never the example itself), in label order: after the query on masked LMs as in LM-BFF, before it on
causal LMs, whose query must end at the mask. The query is cut to model.max_length as without demonstrations,
and the demonstrations share the other `demo_max_length - model.max_length` tokens, whatever the query's length;
`demo_max_length` is by default twice model.max_length (LM-BFF's `--double_demo`; it caps the query and each
demonstration at fixed lengths, 110 and 50 tokens on mr, where this cuts the longest texts first). Deviations
from LM-BFF: the draw is made once per example (by the seed and the example's id) rather than afresh each
epoch, and inference uses one draw, not an ensemble over 16.
"""

import logging
import random
from dataclasses import dataclass
from enum import StrEnum

import torch

from prompttune.config.schema import Invalid, bounded
from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.core import Head, MethodConfig
from prompttune.methods.probing import WITH_PROBING
from prompttune.methods.prompted import PromptedMethod
from prompttune.prompts.demonstrations import by_label, draw_per_label
from prompttune.prompts.encoding import EncodedExample, collate

log = logging.getLogger(__name__)


class Mode(StrEnum):
    single = "single"
    ensemble = "ensemble"  # one model per pattern, their ensemble soft-labels the unlabeled pool, distillation
    ipet = "ipet"  # iterative PET: generations of ensembles, then distillation


class EnsembleWeights(StrEnum):
    dev = "dev"  # dev accuracy
    train_before = "train_before"  # PET's code: train accuracy before training
    uniform = "uniform"


class DistillInto(StrEnum):
    finetune = "finetune"  # a sequence classifier, as PET
    pet = "pet"  # pattern_id's PET model


@dataclass
class PetConfig(MethodConfig):
    head: Head = Head.verbalizer
    demonstrations: bool = False  # LM-BFF: one training example of each label in every example's context
    # with demonstrations: tokens for query + demonstrations; null: twice model.max_length (LM-BFF's --double_demo)
    demo_max_length: int | None = bounded(None, ge=1)
    # PET's α: weight of the auxiliary LM loss on unlabeled text; 0 turns it off (no unlabeled text is encoded)
    lm_weight: float = bounded(1.0e-4, ge=0)
    unlabeled_size: int = bounded(1000, ge=0)  # unlabeled texts drawn by seed from the pool outside the split
    mode: Mode = Mode.single
    ensemble_patterns: list[int] | None = None  # ensemble: which patterns; null: all of the dataset's
    ensemble_weights: EnsembleWeights = EnsembleWeights.dev
    temperature: float = bounded(2.0, gt=0)  # of the soft labels and the distillation loss (PET's default)
    distill_into: DistillInto = DistillInto.finetune  # the final model
    distill_steps: int | None = bounded(None, ge=1)  # null: trainer.max_steps
    distill_lr: float | None = bounded(None, ge=0)  # null: trainer.lr
    distill_head_lr: float | None = bounded(1.0e-3, ge=0)  # finetune student's new head (as its budget); null: lr
    ipet_generations: int = bounded(3, ge=1)  # ipet: generations in all, the first being the plain ensemble
    ipet_scale: float = bounded(5.0, ge=1)  # ipet: the training set grows by this factor per generation
    ipet_share: float = bounded(0.25, gt=0, le=1)  # ipet: share of the other models that label a model's new examples

    def unlabeled_texts(self) -> int:
        wanted = self.lm_weight or self.mode in (Mode.ensemble, Mode.ipet)
        return self.unlabeled_size if wanted else 0

    def check(self) -> None:
        super().check()
        if self.freeze_backbone and self.head != Head.verbalizer:
            raise Invalid("head", self.head, "verbalizer with freeze_backbone=true (the linear head is finetune's)")
        if self.demonstrations and self.head != Head.verbalizer:
            raise Invalid("head", self.head, "verbalizer with demonstrations=true (they are written with label words)")
        if self.lm_weight >= 1:
            raise Invalid("lm_weight", self.lm_weight, "a number in [0, 1); PET uses 1e-4, 0 turns it off")
        if self.ensemble_patterns is not None and (
            not self.ensemble_patterns or any(p < 0 for p in self.ensemble_patterns)
        ):
            raise Invalid("ensemble_patterns", self.ensemble_patterns, "null or a non-empty list of pattern ids >= 0")


@register("pet")
class Pet(PromptedMethod):
    config_class = PetConfig
    # fact probing too (methods/probing.py): `prompttune eval` is the hand-written pattern zero-shot; trained, the
    # pattern with the LM fine-tuned (P-Tuning's MP+FT)
    task_kinds = WITH_PROBING

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        super().fit_examples(train, dev)
        self.demonstration_pool = by_label(train, len(self.task.labels))

    def demonstrations(self, examples: list[Example]) -> list[list[Example]] | None:
        if not self.cfg.demonstrations:
            return None
        seed = self.task.seed
        return [draw_per_label(self.demonstration_pool, 1, random.Random(f"{seed}:{e.guid}"), e.guid) for e in examples]

    def setup(self) -> None:
        if self.cfg.demonstrations:
            wanted = self.cfg.demo_max_length or 2 * self.max_length
            self.context_length = self._demonstration_context(wanted, "method.demo_max_length")
        self.demonstration_pool: list[list[Example]] = [[] for _ in self.task.labels]
        self._unlabeled: list[EncodedExample] = []
        if self.cfg.freeze_backbone:
            self._train_only_lm_head()

    def _train_only_lm_head(self) -> None:
        embedding = self.backbone.embeddings.weight
        own = [p for p in self.backbone.lm_head.parameters() if p is not embedding]
        if not own:
            raise UserError(
                f"method.freeze_backbone=true leaves nothing to train on {self.backbone.name}: its LM head is "
                "tied to the input embeddings; use method=prompt_tuning or freeze_backbone=false"
            )
        for param in own:
            param.requires_grad_(True)

    # --- auxiliary language modelling -----------------------------------------------------------
    def use_unlabeled(self, encoded: list[EncodedExample], batch_size: int) -> None:
        """Texts for the auxiliary LM loss, already put through the pattern; each step draws a batch of them.
        Every draw (which texts, which tokens to mask) comes from torch's global generator, which a resumed
        run restores: the same steps see the same unlabeled batches."""
        if not self.backbone.has_lm_loss:  # T5's span corruption is not implemented
            log.warning("model %s: no auxiliary LM loss for its family; PET trains without it", self.backbone.name)
            return
        self._unlabeled = encoded
        self._lm_batch_size = batch_size

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = super().training_loss(batch)
        if not self.cfg.lm_weight or not self._unlabeled:
            return loss
        lm_loss = self.lm_loss(self._next_unlabeled_batch(batch["input_ids"].device))
        if lm_loss is None:
            return loss
        return (1 - self.cfg.lm_weight) * loss + self.cfg.lm_weight * lm_loss

    def _next_unlabeled_batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        chosen = torch.randperm(len(self._unlabeled))[: self._lm_batch_size].tolist()
        batch = collate([self._unlabeled[i] for i in chosen], self.backbone.tokenizer.pad_token_id)
        return {k: v.to(device) for k, v in batch.items()}

    def lm_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Masked-LM loss (MLM) or next-token loss (causal LM) of an unlabeled batch; None if nothing to predict."""
        return self.backbone.lm_loss(self.hidden_states, batch, None)
