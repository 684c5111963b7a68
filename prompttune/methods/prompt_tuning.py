"""Prompt Tuning (Lester et al. 2021): a few trainable input embeddings; the model stays frozen."""

from dataclasses import dataclass

import torch
from torch import nn

from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.base import MethodConfig, SoftPromptMethod

INITS = ("vocab", "random", "text")


@dataclass
class PromptTuningConfig(MethodConfig):
    freeze_backbone: bool = True
    n_tokens: int = 20  # prepended as {soft:n_tokens} unless the template places its own {soft} slots
    init: str = "vocab"  # vocab: embeddings of sampled vocabulary tokens | random | text: of init_text
    init_text: str | None = None


def soft_prefixed(template: str, n_tokens: int) -> str:
    return template if "{soft" in template else f"{{soft:{n_tokens}}}{template}"


@register("prompt_tuning")
class PromptTuning(SoftPromptMethod):
    config_class = PromptTuningConfig

    def template_source(self) -> str:
        return soft_prefixed(super().template_source(), self.cfg.n_tokens)

    def setup(self) -> None:
        self.soft_embeddings = nn.Parameter(self._initial_embeddings(self.template.n_soft))

    def _initial_embeddings(self, n: int) -> torch.Tensor:
        table = self.backbone.embeddings.weight.detach()
        if self.cfg.init == "random":
            return torch.empty(n, table.shape[1]).uniform_(-0.5, 0.5)
        if self.cfg.init == "vocab":
            return table[torch.randint(0, min(5000, table.shape[0]), (n,))].clone().float()
        if self.cfg.init == "text":
            if not self.cfg.init_text:
                raise UserError(
                    "method.init=text needs method.init_text, e.g. method.init_text='Is this review positive?'"
                )
            ids = self.backbone.tokenizer(self.cfg.init_text, add_special_tokens=False)["input_ids"]
            return table[torch.tensor(ids).repeat(n // len(ids) + 1)[:n]].clone().float()
        raise UserError(f"method.init={self.cfg.init!r} is unknown; use one of {list(INITS)}")

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask, soft_positions, self.soft_embeddings)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return [self.soft_embeddings]
