"""Packing: a right-padded batch of a causal LM run as fewer, fuller rows, so that the layers compute on less
padding, and a leading segment that every example shares computed once.

Padding. The examples of a batch [B, L] are placed, longest first, into the first row with room (first-fit
decreasing) in rows of C tokens: C = L (rows as long as the padded ones) or C = N (all N real tokens in one row).
Each example keeps its own positions (0, 1, ...) and attends, under a block-diagonal causal mask, to the earlier
tokens of its own example only, exactly as in its padded row.

A shared prefix. When the first k input vectors are the same in every row (prompt tuning's soft prompt, in-context
learning's demonstrations), their states are the same in every row too (a causal LM's token sees only what comes
before it). Each packed row then holds them once, at positions 0..k-1, and every example after them attends to
them as it would to its own copy.

With R rows of width W the linear maps run on R * W tokens instead of B * L, attention on R * W * W pairs instead of
B * L * L; the cheapest of the padded batch and the packings, by the FLOP estimates of training/flops.py, runs.
"""

from dataclasses import dataclass

import torch

SHARED = -2  # the owner of a shared-prefix slot: every example's tokens may attend to it
PADDING = -1


@dataclass
class Packing:
    rows: int
    shared: int  # k: the leading positions every example shares, held once per packed row
    owners: torch.Tensor  # [B] the packed row of each example
    where: tuple[torch.Tensor, torch.Tensor]  # (example, position) of every real token after the shared prefix
    slots: tuple[torch.Tensor, torch.Tensor]  # (row, column) it takes in the packed rows
    positions: torch.Tensor  # [R, W] each slot's position within its example (padding slots: 0)
    mask: torch.Tensor  # [R, 1, W, W] True: the query slot may attend to the key slot


def shared_prefix(embeds: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading positions hold the same vector in every row; each row keeps at least one token of its own."""
    if embeds.shape[0] == 1:
        return 0
    same = (embeds == embeds[:1]).all(-1).all(0)  # [L]
    leading = int(same.long().cumprod(0).sum())
    return max(0, min(leading, int(attention_mask.sum(1).min()) - 1))


def rows_for(lengths: list[int], capacity: int) -> tuple[list[int], list[int]]:
    """First-fit decreasing: each example's (row, offset within the row) for rows of `capacity` tokens."""
    row_of, offset_of, filled = [0] * len(lengths), [0] * len(lengths), []
    for example in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, used in enumerate(filled) if used + lengths[example] <= capacity), len(filled))
        if row == len(filled):
            filled.append(0)
        row_of[example], offset_of[example] = row, filled[row]
        filled[row] += lengths[example]
    return row_of, offset_of


def cost(rows: int, width: int, weights_per_layer: int, hidden: int) -> int:
    """FLOPs of one layer's forward on [rows, width]: 2 * P per token (linear maps), 4 * H per attended pair."""
    return rows * width * (2 * weights_per_layer + 4 * hidden * width)


def plan(attention_mask: torch.Tensor, weights_per_layer: int, hidden: int, shared: int = 0) -> Packing | None:
    """The cheapest way to run a right-padded batch whose first `shared` positions are the same in every row:
    a packing, or None for the padded batch as it is."""
    real = attention_mask.bool()
    own = [n - shared for n in real.sum(1).tolist()]
    batch, width = attention_mask.shape
    best, best_cost = None, cost(batch, width, weights_per_layer, hidden)
    for capacity in (width - shared, sum(own)):
        row_of, offset_of = rows_for(own, capacity)
        rows = max(row_of, default=0) + 1
        packed_cost = cost(rows, shared + capacity, weights_per_layer, hidden)
        if packed_cost < best_cost:
            best, best_cost = (shared + capacity, row_of, offset_of), packed_cost
    return None if best is None else _packing(real, shared, *best)


def _packing(real: torch.Tensor, shared: int, width: int, row_of: list[int], offset_of: list[int]) -> Packing:
    device = real.device
    rows = max(row_of) + 1
    owners = torch.tensor(row_of, device=device)
    real = real.clone()
    real[:, :shared] = False
    where = real.nonzero(as_tuple=True)
    example, position = where
    slots = (owners[example], torch.tensor(offset_of, device=device)[example] + position)  # position >= shared
    columns = torch.arange(width, device=device)
    positions = torch.where(columns < shared, columns, 0).expand(rows, -1).index_put(slots, position)
    owner = torch.full((rows, width), PADDING, dtype=torch.long, device=device)
    owner[:, :shared] = SHARED
    owner = owner.index_put(slots, example)
    visible = (owner[:, :, None] == owner[:, None, :]) | (owner == SHARED)[:, None, :]
    earlier = positions[:, None, :] <= positions[:, :, None]
    return Packing(rows, shared, owners, where, slots, positions, (visible & earlier)[:, None])


def pack(states: torch.Tensor, packing: Packing) -> torch.Tensor:
    """[B, L, H] -> [R, W, H]: the shared prefix at the start of every row, then every example's own tokens in
    their slots; padding slots zero."""
    rows, width = packing.positions.shape
    packed = states.new_zeros(rows, width, states.shape[2])
    packed[:, : packing.shared] = states[0, : packing.shared]
    return packed.index_put(packing.slots, states[packing.where])


def unpack(packed: torch.Tensor, packing: Packing, shape: torch.Size) -> torch.Tensor:
    """[R, W, H] -> [B, L, H]: every real token back in its row (the shared prefix in every row); padding zero."""
    out = packed.new_zeros(shape[0], shape[1], packed.shape[2])
    out[:, : packing.shared] = packed[packing.owners, : packing.shared]
    return out.index_put(packing.where, packed[packing.slots])
