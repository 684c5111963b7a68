"""PET (Schick & Schütze): a pattern turns the input into a cloze, a verbalizer maps labels to words.

Class logits are the label words' log-probabilities at the mask (MLM) or after the pattern (causal LM).
The whole model trains by default; with freeze_backbone only the LM head's own parameters do (for BERT,
its transform and bias: the classifier over the vocabulary), which needs a head not tied away entirely.
"""

from dataclasses import dataclass

from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.base import Head, Method, MethodConfig
from prompttune.schema import Invalid


@dataclass
class PetConfig(MethodConfig):
    head: Head = Head.verbalizer

    def check(self) -> None:
        super().check()
        if self.freeze_backbone and self.head != Head.verbalizer:
            raise Invalid("head", self.head, "verbalizer with freeze_backbone=true (the linear head is finetune's)")


@register("pet")
class Pet(Method):
    config_class = PetConfig

    def setup(self) -> None:
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
