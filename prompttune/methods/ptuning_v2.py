"""P-Tuning v2 (Liu et al. 2022), deep prompt tuning: trainable prompt states at the input of every layer.

The prompt positions hold per-layer trained states, so every layer's keys and values there are learned:
one mechanism (a pre-hook on each transformer layer) for every backbone, no forward() per architecture.
"""

from dataclasses import dataclass

import torch
from torch import nn

from prompttune.methods import register
from prompttune.methods.base import MethodConfig, SoftPromptMethod
from prompttune.methods.prompt_tuning import soft_prefixed
from prompttune.models.backbone import write_at


@dataclass
class PTuningV2Config(MethodConfig):
    head: str = "linear"  # as the paper; verbalizer is an option
    freeze_backbone: bool = True
    n_tokens: int = 16  # prompt length at every layer
    reparameterize: bool = False  # produce the prompts through an MLP (helps some tasks)
    reparam_hidden: int = 512


class DeepPrompts(nn.Module):
    """Prompt states [layers, n_tokens, hidden], free or through a two-layer MLP."""

    def __init__(self, n_layers: int, n_tokens: int, hidden: int, reparameterize: bool, inner: int):
        super().__init__()
        self.shape = (n_layers, n_tokens, hidden)
        if reparameterize:
            self.embedding = nn.Embedding(n_tokens, hidden)
            self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.Tanh(), nn.Linear(inner, n_layers * hidden))
        else:
            self.states = nn.Parameter(torch.randn(n_layers, n_tokens, hidden) * 0.02)

    def forward(self) -> torch.Tensor:
        if hasattr(self, "states"):
            return self.states
        layers, n, hidden = self.shape
        return self.mlp(self.embedding.weight).view(n, layers, hidden).transpose(0, 1)


@register("ptuning_v2")
class PTuningV2(SoftPromptMethod):
    config_class = PTuningV2Config

    def template_source(self) -> str:
        return soft_prefixed(super().template_source(), self.cfg.n_tokens)

    def setup(self) -> None:
        n_layers = len(self.backbone.transformer_layers())
        self.deep_prompts = DeepPrompts(
            n_layers, self.template.n_soft, self.backbone.hidden_size, self.cfg.reparameterize, self.cfg.reparam_hidden
        )

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        prompts = self.deep_prompts()
        with self.backbone.layer_inputs_rewritten(lambda i, states: write_at(states, soft_positions, prompts[i])):
            return self.backbone.hidden_states(input_ids, attention_mask)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return list(self.deep_prompts.parameters())
