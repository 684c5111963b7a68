"""P-Tuning v2 (Liu et al. 2022), deep prompt tuning as prefix tuning (Li & Liang 2021) does it: free key and
value prefixes at every layer's attention, frozen model, linear head.

`prefix=key_value` (the paper): each attention call attends to n_tokens trained keys and values of its own before
the text (2 x layers x n_tokens x kv_heads x head_dim numbers, grouped-query attention included); they take no
sequence positions and pass through no feed-forward block (models/prefix.py: one attention function for every
family). Optionally produced by P-Tuning v2's reparameterisation MLP (an embedding, Linear, tanh, Linear to
2 x layers x d_kv per token) and dropped out as its prefix encoder does.

`prefix=hidden_states` (an ablation, reported apart): trained states overwrite soft positions at the input of
every layer, so their keys and values are tied through the frozen projections, and they use sequence positions
and feed-forward blocks.

Deviation: the prefixes start from the keys and values that sampled vocabulary tokens produce (`init=vocab`; Li &
Liang found initialising from real words' activations helps in low-data settings); `init=random` is the reference
code's N(0, 1) embedding.
"""

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from prompttune.config.schema import bounded
from prompttune.errors import UserError
from prompttune.methods import register
from prompttune.methods.core import Head, MethodConfig
from prompttune.methods.probing import WITH_PROBING
from prompttune.methods.prompted import SoftPromptMethod, soft_prefixed
from prompttune.methods.tagging import WITH_TAGGING
from prompttune.models.backbone import write_at

PREFIXES = ("key_value", "hidden_states")


class Prefix(StrEnum):
    key_value = "key_value"  # per-layer key/value prefixes (the paper)
    hidden_states = "hidden_states"  # prompt states at each layer's input (ablation)


class DeepInit(StrEnum):
    vocab = "vocab"  # what sampled real tokens produce at each layer
    random = "random"


@dataclass
class PTuningV2Config(MethodConfig):
    head: Head = Head.linear  # as the paper; verbalizer is an option
    freeze_backbone: bool = True
    prefix: Prefix = Prefix.key_value  # key_value: per-layer key/value prefixes (the paper) | hidden_states (ablation)
    n_tokens: int = bounded(16, ge=1)  # prefix length at every layer
    init: DeepInit = DeepInit.vocab  # vocab: what sampled real tokens produce at each layer | random
    reparameterize: bool = False  # produce the prefixes through a two-layer MLP (random init)
    reparam_hidden: int = bounded(512, ge=1)
    prefix_dropout: float = bounded(0.0, ge=0, le=1)  # dropout on the prefixes (key_value), as P-Tuning v2's

    def soft_input_tokens(self) -> int:
        return self.n_tokens if self.prefix == Prefix.hidden_states else 0  # key/value prefixes take no position


class KeyValuePrefixes(nn.Module):
    """Prefixes [sites, 2 (key, value), kv_heads, n_tokens, head_dim]: free parameters from `initial`, or the
    output of an MLP over n_tokens embeddings of width `width`."""

    def __init__(self, initial: torch.Tensor, reparameterize: bool, width: int, inner: int, dropout: float):
        super().__init__()
        self.shape = initial.shape
        sites, two, heads, n_tokens, head_dim = initial.shape
        if reparameterize:
            self.embedding = nn.Embedding(n_tokens, width)
            out = sites * two * heads * head_dim
            self.mlp = nn.Sequential(nn.Linear(width, inner), nn.Tanh(), nn.Linear(inner, out))
        else:
            self.prefixes = nn.Parameter(initial)
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> torch.Tensor:
        if hasattr(self, "prefixes"):
            return self.dropout(self.prefixes)
        sites, two, heads, n_tokens, head_dim = self.shape
        out = self.mlp(self.embedding.weight).view(n_tokens, sites, two, heads, head_dim)
        return self.dropout(out.permute(1, 2, 3, 0, 4))


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
    task_kinds = WITH_TAGGING | WITH_PROBING  # tagging (methods/tagging.py) and fact probing (methods/probing.py)

    @property
    def on_hidden_states(self) -> bool:
        if self.cfg.prefix not in PREFIXES:
            raise UserError(f"method.prefix={self.cfg.prefix!r} is unknown; use one of {list(PREFIXES)}")
        return self.cfg.prefix == "hidden_states"

    def template_source(self) -> str:
        source = super().template_source()
        return soft_prefixed(source, self.cfg.n_tokens) if self.on_hidden_states else source

    def setup(self) -> None:
        if self.cfg.init not in ("vocab", "random"):
            raise UserError(f"method.init={self.cfg.init!r} is unknown; use vocab or random")
        if self.on_hidden_states:
            self.deep_prompts = DeepPrompts(self._initial_states(), self.cfg.reparameterize, self.cfg.reparam_hidden)
            return
        if self.template.n_soft:
            raise UserError(
                "method.prefix=key_value puts its prompts in the attention, not in the text: drop the {soft} slots "
                "from the template (or use method.prefix=hidden_states)"
            )
        self.kv_prefixes = KeyValuePrefixes(
            self._initial_key_values(),
            self.cfg.reparameterize,
            self.backbone.hidden_size,
            self.cfg.reparam_hidden,
            self.cfg.prefix_dropout,
        )

    def _sampled_tokens(self, n: int) -> torch.Tensor:
        vocab = min(5000, self.backbone.embeddings.num_embeddings)
        return torch.randint(0, vocab, (n,), device=self.backbone.embeddings.weight.device)

    def _initial_key_values(self) -> torch.Tensor:
        n = self.cfg.n_tokens
        # Starting from what real tokens produce keeps the frozen model on familiar ground; causal LMs in
        # particular lean on their first positions (attention sinks), which arbitrary vectors would disturb.
        per_site = self.backbone.key_values(self._sampled_tokens(n)[None])
        if len({k.shape for k, _ in per_site}) > 1:
            raise UserError(f"model {self.backbone.name}: its attention layers differ in key/value shape")
        initial = torch.stack([torch.stack([k[0], v[0]]) for k, v in per_site]).float().cpu()
        return torch.randn_like(initial) if self.cfg.init == "random" else initial

    def _initial_states(self) -> torch.Tensor:
        n_layers, n_tokens = len(self.backbone.prompt_layers()), self.template.n_soft
        if self.cfg.init == "random":
            return torch.randn(n_layers, n_tokens, self.backbone.hidden_size) * 0.02
        return self.backbone.layer_inputs(self._sampled_tokens(n_tokens)).float().cpu()

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        if self.on_hidden_states:
            prompts = self.deep_prompts()
            with self.backbone.layer_inputs_rewritten(lambda i, states: write_at(states, soft_positions, prompts[i])):
                return self.backbone.hidden_states(input_ids, attention_mask)
        prefixes = self.kv_prefixes()
        with self.backbone.key_value_prefixes(lambda i: (prefixes[i, 0][None], prefixes[i, 1][None])):
            return self.backbone.hidden_states(input_ids, attention_mask)

    def prompt_numbers(self) -> int:
        n_sites = len(self.backbone.prompt_layers()) * (1 if self.on_hidden_states else 2)
        return n_sites * self.cfg.n_tokens * self.backbone.hidden_size  # key/value widths are at most hidden

    def prompt_parameters(self) -> list[nn.Parameter]:
        return list((self.deep_prompts if self.on_hidden_states else self.kv_prefixes).parameters())
