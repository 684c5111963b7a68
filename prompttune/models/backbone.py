"""One interface over masked LMs, causal LMs and plain encoders: hidden states, and LM scores where needed."""

import copy
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from prompttune.errors import UserError
from prompttune.models.loading import Loaded


def write_at(states: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Replace states [B, L, H] at positions [B, S] with vectors [S, H] (or [B, S, H]), in one scatter."""
    if positions.shape[1] == 0:
        return states
    batch, _, hidden = states.shape
    index = positions.unsqueeze(-1).expand(-1, -1, hidden)
    values = vectors.to(states.dtype).expand(batch, -1, -1)
    return states.scatter(1, index, values)


def _with_identity_at(module: nn.Module, path: list[str]) -> nn.Module:
    """A shallow copy of module whose submodule at path is nn.Identity; every parameter stays shared."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    name, rest = path[0], path[1:]
    clone._modules[name] = _with_identity_at(module._modules[name], rest) if rest else nn.Identity()
    return clone


class Backbone(nn.Module):
    def __init__(self, loaded: Loaded, name: str):
        super().__init__()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.kind = loaded.kind
        self.name = name
        self.body = self.model.base_model
        self.embeddings = self.model.get_input_embeddings()
        self.hidden_size = self.model.config.hidden_size
        self._derived: dict[str, nn.Module] = {}  # views of the model's modules, kept out of the module tree

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        soft_positions: torch.Tensor | None = None,
        soft_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeds = self.embeddings(input_ids)
        if soft_embeds is not None:
            embeds = write_at(embeds, soft_positions, soft_embeds)
        return self.body(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state

    @property
    def lm_head(self) -> nn.Module:
        if self.kind == "encoder":
            raise UserError(
                f"model {self.name} has no LM head, so label words cannot be scored; use method.head=linear "
                "(or method=finetune / ptuning_v2), or a masked or causal LM"
            )
        heads = [m for n, m in self.model.named_children() if n != self.model.base_model_prefix]
        if len(heads) != 1:
            raise UserError(f"model {self.name}: cannot tell its LM head among {len(heads)} modules")
        return heads[0]

    def lm_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary log-probabilities for the given hidden states only ([..., H] -> [..., V])."""
        return self.lm_head(hidden).float().log_softmax(-1)

    def token_logits(self, hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """LM logits of the given tokens only ([N, H], [K] -> [N, K]): the head's transform, then the
        output embeddings of those tokens, never the whole vocabulary."""
        features = self._head_transform()(hidden)
        decoder = self.model.get_output_embeddings()
        logits = features @ decoder.weight[token_ids].T
        if decoder.bias is not None:
            logits = logits + decoder.bias[token_ids]
        return logits.float()

    def _head_transform(self) -> nn.Module:
        """The LM head with its vocabulary projection replaced by identity, sharing the head's parameters."""
        if "head_transform" not in self._derived:
            head, decoder = self.lm_head, self.model.get_output_embeddings()
            path = next((name for name, m in head.named_modules() if m is decoder), None)
            if path is None:
                raise UserError(f"model {self.name}: its output embeddings are not inside its LM head")
            self._derived["head_transform"] = _with_identity_at(head, path.split(".")) if path else nn.Identity()
        return self._derived["head_transform"]

    def transformer_layers(self) -> nn.ModuleList:
        n_layers = self.model.config.num_hidden_layers
        for module in self.body.modules():
            if isinstance(module, nn.ModuleList) and len(module) == n_layers:
                return module
        raise UserError(f"model {self.name}: cannot find its {n_layers} transformer layers")

    @contextmanager
    def layer_inputs_rewritten(self, rewrite: Callable[[int, torch.Tensor], torch.Tensor]):
        """While active, every layer's input hidden states pass through rewrite(layer_index, states)."""

        def hook_for(index: int):
            def hook(_module, args, kwargs):
                if args:
                    return (rewrite(index, args[0]), *args[1:]), kwargs
                kwargs["hidden_states"] = rewrite(index, kwargs["hidden_states"])
                return args, kwargs

            return hook

        handles = [
            layer.register_forward_pre_hook(hook_for(i), with_kwargs=True)
            for i, layer in enumerate(self.transformer_layers())
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def layer_inputs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every layer's input hidden states for one sequence [L] -> [layers, L, H]."""
        captured: list[torch.Tensor] = []

        def record(_index: int, states: torch.Tensor) -> torch.Tensor:
            captured.append(states[0])
            return states

        with self.layer_inputs_rewritten(record):
            self.hidden_states(input_ids[None], torch.ones_like(input_ids)[None])
        return torch.stack(captured)

    def freeze(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
