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
"""

import logging
from dataclasses import dataclass

import torch

from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.base import Method, MethodConfig
from prompttune.prompts.encoding import EncodedExample, collate

MODES = ("single", "ensemble", "ipet")
ENSEMBLE_WEIGHTS = ("dev", "train_before", "uniform")
DISTILL_INTO = ("finetune", "pet")
log = logging.getLogger(__name__)


@dataclass
class PetConfig(MethodConfig):
    head: str = "verbalizer"
    lm_weight: float = 1.0e-4  # PET's α: weight of the auxiliary LM loss on unlabeled text; 0 turns it off
    unlabeled_size: int = 1000  # unlabeled texts drawn by seed from the training pool outside the few-shot split
    mode: str = "single"  # single | ensemble (one model per pattern, ensemble, distillation) | ipet
    ensemble_patterns: list[int] | None = None  # ensemble: which patterns; null: all of the dataset's
    ensemble_weights: str = "dev"  # dev (accuracy) | train_before (PET's code) | uniform
    temperature: float = 2.0  # of the soft labels and the distillation loss (PET's default)
    distill_into: str = "finetune"  # the final model: finetune (a sequence classifier, as PET) | pet
    distill_steps: int | None = None  # null: trainer.max_steps
    distill_lr: float | None = None  # null: trainer.lr
    ipet_generations: int = 3  # ipet: generations in all, the first being the plain ensemble
    ipet_scale: float = 5.0  # ipet: the training set grows by this factor per generation
    ipet_share: float = 0.25  # ipet: share of the other models that label a model's new examples

    def __post_init__(self) -> None:
        check_pet_config(self)


def check_pet_config(cfg: PetConfig) -> None:
    """Runs when the config is validated, so a bad value stops a sweep before any job starts."""
    choices = {"mode": MODES, "ensemble_weights": ENSEMBLE_WEIGHTS, "distill_into": DISTILL_INTO}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise UserError(f"method.{key}={getattr(cfg, key)!r} is unknown; use one of {list(allowed)}")
    if not 0 <= cfg.lm_weight < 1:
        raise UserError(f"method.lm_weight={cfg.lm_weight} must be in [0, 1); PET uses 1e-4, 0 turns it off")
    if cfg.unlabeled_size < 0 or cfg.temperature <= 0:
        raise UserError("method.unlabeled_size must be >= 0 and method.temperature > 0")
    if cfg.ipet_generations < 1 or cfg.ipet_scale < 1 or not 0 < cfg.ipet_share <= 1:
        raise UserError("method.ipet_generations and ipet_scale must be >= 1 and ipet_share in (0, 1]")
    if cfg.distill_steps is not None and cfg.distill_steps < 1:
        raise UserError(f"method.distill_steps={cfg.distill_steps} must be at least 1 (or null)")


@register("pet")
class Pet(Method):
    config_class = PetConfig

    def setup(self) -> None:
        self._unlabeled: list[EncodedExample] = []
        if self.cfg.freeze_backbone:
            self._train_only_lm_head()

    def _train_only_lm_head(self) -> None:
        if self.cfg.head != "verbalizer":
            raise UserError("method=pet with freeze_backbone=true needs head=verbalizer; the linear head is finetune's")
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
