"""Prompt Tuning (Lester et al. 2021): a few trainable input embeddings; the model stays frozen."""

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from prompttune.config.schema import Invalid, bounded
from prompttune.methods import register
from prompttune.methods.core import MethodConfig
from prompttune.methods.probing import WITH_PROBING
from prompttune.methods.prompted import SoftPromptMethod, soft_prefixed
from prompttune.methods.tagging import WITH_TAGGING


class PromptInit(StrEnum):
    vocab = "vocab"  # embeddings of sampled vocabulary tokens
    random = "random"  # uniform in [-0.5, 0.5]
    text = "text"  # embeddings of init_text's tokens, repeated


@dataclass
class PromptTuningConfig(MethodConfig):
    freeze_backbone: bool = True
    n_tokens: int = bounded(20, ge=1)  # prepended as {soft:n_tokens} unless the template places its own {soft}
    init: PromptInit = PromptInit.vocab
    init_text: str | None = None

    def soft_input_tokens(self) -> int:
        return self.n_tokens

    def check(self) -> None:
        super().check()
        if self.init == PromptInit.text and not (self.init_text or "").strip():
            raise Invalid("init_text", self.init_text, "some text when method.init=text, e.g. 'Is it positive?'")


@register("prompt_tuning")
class PromptTuning(SoftPromptMethod):
    config_class = PromptTuningConfig
    task_kinds = WITH_TAGGING | WITH_PROBING  # tagging (methods/tagging.py) and fact probing (methods/probing.py)

    def template_source(self) -> str:
        return soft_prefixed(super().template_source(), self.cfg.n_tokens)

    def setup(self) -> None:
        self.soft_embeddings = nn.Parameter(self._initial_embeddings(self.template.n_soft))

    def _initial_embeddings(self, n: int) -> torch.Tensor:
        table = self.backbone.embeddings.weight.detach()
        if self.cfg.init == "random":
            return torch.empty(n, table.shape[1]).uniform_(-0.5, 0.5)
        if self.cfg.init == "vocab":  # rows as the layers receive them (Gemma scales its embeddings by sqrt(hidden))
            return self.backbone.token_embeddings(torch.randint(0, min(5000, table.shape[0]), (n,)))
        ids = self.backbone.tokenizer(self.cfg.init_text, add_special_tokens=False)["input_ids"]
        return self.backbone.token_embeddings(torch.tensor(ids).repeat(n // len(ids) + 1)[:n])

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask, soft_positions, self.soft_embeddings)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.soft_embeddings]
