"""PET (Schick & Schütze): a pattern turns the input into a cloze, a verbalizer maps labels to words.

Class logits are the label words' log-probabilities at the mask (MLM) or after the pattern (causal LM).
The whole model trains by default; with freeze_backbone only the LM head's own parameters do (for BERT,
its transform and bias: the classifier over the vocabulary), which needs a head not tied away entirely.

With `demonstrations: true` (LM-BFF, Gao et al. 2021) each example's context also holds one training example
of each label, written as the pattern filled with its label word and drawn for that example from the train
split (never the example itself), in label order: after the query on masked LMs as in LM-BFF, before it on
causal LMs, whose query must end at the mask. Deviations from LM-BFF: the draw is made once per example (by
the seed and the example's id) rather than afresh each epoch, and inference uses one draw, not an ensemble
over 16.
"""

import random
from dataclasses import dataclass

from prompttune.data.records import Example
from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.base import Head, Method, MethodConfig
from prompttune.prompts.demonstrations import by_label, draw_per_label
from prompttune.schema import Invalid


@dataclass
class PetConfig(MethodConfig):
    head: Head = Head.verbalizer
    demonstrations: bool = False  # LM-BFF: one training example of each label in every example's context

    def check(self) -> None:
        super().check()
        if self.freeze_backbone and self.head != Head.verbalizer:
            raise Invalid("head", self.head, "verbalizer with freeze_backbone=true (the linear head is finetune's)")
        if self.demonstrations and self.head != Head.verbalizer:
            raise Invalid("head", self.head, "verbalizer with demonstrations=true (they are written with label words)")


@register("pet")
class Pet(Method):
    config_class = PetConfig

    def fit_examples(self, train: list[Example], dev: list[Example]) -> None:
        super().fit_examples(train, dev)
        self.demonstration_pool = by_label(train, len(self.task.labels))

    def demonstrations(self, examples: list[Example]) -> list[list[Example]] | None:
        if not self.cfg.demonstrations:
            return None
        seed = self.task.seed
        return [draw_per_label(self.demonstration_pool, 1, random.Random(f"{seed}:{e.guid}"), e.guid) for e in examples]

    def setup(self) -> None:
        self.demonstration_pool: list[list[Example]] = [[] for _ in self.task.labels]
        if not self.cfg.freeze_backbone:
            return
        embedding = self.backbone.embeddings.weight
        own = [p for p in self.backbone.lm_head.parameters() if p is not embedding]
        if not own:
            raise UserError(
                f"method.freeze_backbone=true leaves nothing to train on {self.backbone.name}: its LM head is "
                "tied to the input embeddings; use method=prompt_tuning or freeze_backbone=false"
            )
        for param in own:
            param.requires_grad_(True)
