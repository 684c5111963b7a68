"""P-Tuning (Liu et al. 2021): soft tokens among the template's anchor words, produced by a prompt encoder
(a bidirectional LSTM then a two-layer MLP, or the MLP alone) from free embeddings; frozen model by default."""

import re
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from prompttune.config.schema import bounded
from prompttune.methods import register
from prompttune.methods.core import MethodConfig
from prompttune.methods.probing import WITH_PROBING
from prompttune.methods.prompted import SoftPromptMethod


class Encoder(StrEnum):
    lstm = "lstm"  # a bidirectional LSTM, then a two-layer MLP
    mlp = "mlp"  # the MLP alone


@dataclass
class PTuningV1Config(MethodConfig):
    freeze_backbone: bool = True
    n_tokens: int = bounded(3, ge=1)  # soft tokens at each anchor: before the input and after each text slot
    encoder: Encoder = Encoder.lstm
    encoder_hidden: int | None = bounded(None, ge=2)  # null: the model's hidden size

    def soft_input_tokens(self) -> int:
        return self.n_tokens  # at the first anchor at least


def soft_among_anchors(template: str, n_tokens: int) -> str:
    """`{text_a} It was {mask}.` -> `{soft:3}{text_a}{soft:3} It was {mask}.` (unless it has soft slots)."""
    if "{soft" in template:
        return template
    return f"{{soft:{n_tokens}}}" + re.sub(r"\{(text_a|text_b)\}", rf"{{\1}}{{soft:{n_tokens}}}", template)


class PromptEncoder(nn.Module):
    def __init__(self, n_tokens: int, hidden: int, inner: int, kind: Encoder):
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, hidden)
        self.lstm = (
            nn.LSTM(hidden, inner // 2, num_layers=2, bidirectional=True, batch_first=True)
            if kind == Encoder.lstm
            else None
        )
        width = inner if self.lstm is not None else hidden
        self.mlp = nn.Sequential(nn.Linear(width, inner), nn.ReLU(), nn.Linear(inner, hidden))

    def forward(self) -> torch.Tensor:
        states = self.embedding.weight.unsqueeze(0)
        if self.lstm is not None:
            # In fp32 even under bf16 autocast: oneDNN has no bf16 LSTM on CPUs without AVX512-BF16/AMX (it
            # raises "could not create a primitive descriptor"), and the encoder is a few thousand numbers.
            with torch.autocast(states.device.type, enabled=False):
                states = self.lstm(states.float())[0]
        return self.mlp(states).squeeze(0)


@register("ptuning_v1")
class PTuningV1(SoftPromptMethod):
    config_class = PTuningV1Config
    task_kinds = WITH_PROBING  # fact probing too (methods/probing.py): the paper's LAMA setting, LM frozen

    def template_source(self) -> str:
        return soft_among_anchors(super().template_source(), self.cfg.n_tokens)

    def setup(self) -> None:
        hidden = self.backbone.hidden_size
        inner = self.cfg.encoder_hidden or hidden
        self.prompt_encoder = PromptEncoder(self.template.n_soft, hidden, inner, self.cfg.encoder)

    def hidden_states(self, input_ids, attention_mask, soft_positions) -> torch.Tensor:
        return self.backbone.hidden_states(input_ids, attention_mask, soft_positions, self.prompt_encoder())

    def prompt_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt_encoder.parameters())
