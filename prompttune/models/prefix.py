"""Key/value prefixes at every attention call, through transformers' attention-function interface.

One registered attention function serves every family that dispatches through `ALL_ATTENTION_FUNCTIONS` (BERT,
RoBERTa, Llama, GPT-2, T5, ...): it runs torch's SDPA as transformers' own `sdpa` does, after putting this call's
prefix keys and values in front of the text's and widening the mask over them. The prefixes take no sequence
positions (the text keeps positions 0..L-1), never pass through a feed-forward block, and are already in the
space the attention compares in (after any rotary embedding), as prefix tuning and P-Tuning v2 define them.
"""

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "prompttune_prefix"

# (attention module, its keys, its values) -> (prefix keys, prefix values) [B or 1, kv_heads, P, head_dim], or None
PrefixFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]
_active: ContextVar[PrefixFn | None] = ContextVar("prompttune_prefix_fn", default=None)


@contextmanager
def prefixes_from(prefix_fn: PrefixFn):
    """While active, every attention call of a model set to ATTENTION asks prefix_fn for its prefix."""
    token = _active.set(prefix_fn)
    try:
        yield
    finally:
        _active.reset(token)


def active_prefix() -> PrefixFn | None:
    """The prefix function in force, if any (to extend it rather than replace it)."""
    return _active.get()


def widened_mask(mask, query, key, n_prefix: int, is_causal: bool | None, module: nn.Module):
    """The mask over [prefix; text] keys: every query sees every prefix position, the text as before.

    transformers leaves the mask out (None) where SDPA's own `is_causal` would do; with a prefix the keys outnumber
    the queries, so a causal pattern must be spelt out.
    """
    if mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        q_len, kv_len = query.shape[2], key.shape[2]
        if not (causal and q_len > 1):
            return None
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)[None, None]
    fill = torch.ones if mask.dtype == torch.bool else torch.zeros  # boolean "may attend" or additive float
    return torch.cat([fill(*mask.shape[:-1], n_prefix, dtype=mask.dtype, device=mask.device), mask], -1)


def prefixed_attention(module, query, key, value, attention_mask, is_causal=None, position_bias=None, **kwargs):
    prefix_fn = _active.get()
    prefix = prefix_fn(module, key, value) if prefix_fn is not None else None
    if prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, is_causal=is_causal, position_bias=position_bias, **kwargs
        )
    prefix_keys, prefix_values = (p.to(key.dtype).expand(key.shape[0], -1, -1, -1) for p in prefix)
    n_prefix = prefix_keys.shape[2]
    mask = widened_mask(attention_mask, query, key, n_prefix, is_causal, module)
    if position_bias is not None:  # relative-position biases (T5): none towards a prefix
        position_bias = nn.functional.pad(position_bias, (n_prefix, 0))
    return sdpa_attention_forward(
        module,
        query,
        torch.cat([prefix_keys, key], 2),
        torch.cat([prefix_values, value], 2),
        mask,
        is_causal=False,
        position_bias=position_bias,
        **kwargs,
    )


AttentionInterface.register(ATTENTION, prefixed_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
