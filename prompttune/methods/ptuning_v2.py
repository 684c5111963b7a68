"""P-Tuning v2 (Liu et al. 2022), deep prompt tuning: trainable prompt states at the input of every layer.

The prompt positions hold per-layer trained states, so every layer's keys and values there are learned:
one mechanism (a pre-hook on each transformer layer) for every backbone, no forward() per architecture.
"""

from dataclasses import dataclass

import torch
from torch import nn

from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.base import MethodConfig, SoftPromptMethod
from prompttune.methods.prompt_tuning import soft_prefixed
from prompttune.models.backbone import write_at


@dataclass
class PTuningV2Config(MethodConfig):
    head: str = "linear"  # as the paper; verbalizer is an option
    freeze_backbone: bool = True
    n_tokens: int = 16  # prompt length at every layer
    init: str = "vocab"  # vocab: the states real tokens have at each layer | random (small noise)
    reparameterize: bool = False  # produce the prompts through an MLP (helps some tasks; random init)
    reparam_hidden: int = 512


class DeepPrompts(nn.Module):
    """Prompt states [layers, n_tokens, hidden]: free parameters from `initial`, or the output of a two-layer MLP."""

    def __init__(self, initial: torch.Tensor, reparameterize: bool, inner: int):
        super().__init__()
        self.shape = initial.shape
        layers, n_tokens, hidden = initial.shape
        if reparameterize:
            self.embedding = nn.Embedding(n_tokens, hidden)
            self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.Tanh(), nn.Linear(inner, layers * hidden))
        else:
            self.states = nn.Parameter(initial)

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
        self.deep_prompts = DeepPrompts(self._initial_states(), self.cfg.reparameterize, self.cfg.reparam_hidden)

    def _initial_states(self) -> torch.Tensor:
        n_layers, n_tokens = len(self.backbone.prompt_layers()), self.template.n_soft
        if self.cfg.init == "random":
            return torch.randn(n_layers, n_tokens, self.backbone.hidden_size) * 0.02
        if self.cfg.init != "vocab":
            raise UserError(f"method.init={self.cfg.init!r} is unknown; use vocab or random")
        # Starting from states that real tokens produce keeps the frozen model on familiar ground; causal LMs
        # in particular lean on their first positions (attention sinks), which tiny random states would break.
        vocab = min(5000, self.backbone.embeddings.num_embeddings)
        sampled = torch.randint(0, vocab, (n_tokens,), device=self.backbone.embeddings.weight.device)
        return self.backbone.layer_inputs(sampled).float().cpu()

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        prompts = self.deep_prompts()
        with self.backbone.layer_inputs_rewritten(lambda i, states: write_at(states, soft_positions, prompts[i])):
            return self.backbone.hidden_states(input_ids, attention_mask)

    def prompt_parameters(self) -> list[nn.Parameter]:
        return list(self.deep_prompts.parameters())
