"""Fine-tuning: a new linear head on the first (encoder) or last (causal LM) token; the whole model trains."""

from dataclasses import dataclass

from prompttune.methods import register
from prompttune.methods.base import Method, MethodConfig


@dataclass
class FinetuneConfig(MethodConfig):
    head: str = "linear"


@register("finetune")
class Finetune(Method):
    config_class = FinetuneConfig
