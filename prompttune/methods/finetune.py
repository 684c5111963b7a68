"""Fine-tuning, LM-BFF's baseline: the whole model trains with the head transformers' AutoModelForSequenceClassification
puts on it (`head=classification`, Backbone.sequence_classifier): dense + tanh (the model's own pooler where the
loaded model has one, as BERT; a new one as RoBERTa's) then a linear layer on the first token of an encoder, a plain
linear `score` on the last non-pad token of a causal LM. Sentence pairs get segment ids where the model has them
(BERT). The new head may train at its own learning rate (`head_lr`). `head=linear` is the former dropout + linear
layer on the raw token state. On a token_classification dataset every word gets a tag from the tag head of
methods/tagging.py (AutoModelForTokenClassification's), whatever `head` says."""

from dataclasses import dataclass

from prompttune.methods import register
from prompttune.methods.core import Head, MethodConfig
from prompttune.methods.prompted import PromptedMethod
from prompttune.methods.tagging import WITH_TAGGING


@dataclass
class FinetuneConfig(MethodConfig):
    head: Head = Head.classification


@register("finetune")
class Finetune(PromptedMethod):
    config_class = FinetuneConfig
    task_kinds = WITH_TAGGING  # sequence labelling too: the tag head of methods/tagging.py
