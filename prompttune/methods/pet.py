"""PET (Schick & Schütze): a pattern turns the input into a cloze, a verbalizer maps labels to words.

Class logits are the label words' log-probabilities at the mask (MLM) or after the pattern (causal LM).
The whole model trains by default; with freeze_backbone only the LM head's own parameters do (for BERT,
its transform and bias: the classifier over the vocabulary), which needs a head not tied away entirely.
"""

from dataclasses import dataclass

from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.base import Method, MethodConfig


@dataclass
class PetConfig(MethodConfig):
    head: str = "verbalizer"


@register("pet")
class Pet(Method):
    config_class = PetConfig

    def setup(self) -> None:
        if not self.cfg.freeze_backbone:
            return
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
