"""Less padding and no repeated work in a causal LM's batch: packing, and a shared prefix run once.

Packing. The examples of a right-padded batch [B, L] are placed, longest first, into the first row with room
(first-fit decreasing) in rows of C tokens: C = L (rows as long as the padded ones), 2L, 4L, ... or N (all N real
tokens in one row), never longer than MAX_ROW tokens (or L, if longer): attention grows with the square of a row,
and on a CPU a long masked row costs far more than its FLOPs say (one row of 3,075 tokens ran 3.4x slower than
the padded 32 x 223 batch it packed). Each example keeps its own positions and attends, under a block-diagonal
causal mask, to the earlier tokens of its own example only, exactly as in its padded row. With R rows of width W
the linear maps run on R * W tokens instead of B * L and attention on R * W * W pairs instead of B * L * L; the
cheapest of the padded batch and the packings, by the FLOP estimates of training/flops.py, runs.

A shared prefix. When the first k input vectors are the same in every row (prompt tuning's soft prompt, in-context
learning's demonstrations), their states, keys and values are the same in every row too: a causal LM's token sees
only what comes before it. `shared_prefix` finds k; the family runs those k positions once and the rest of every
row attends to their keys and values (models/families.py, CausalLM).
"""

from dataclasses import dataclass

import torch

MAX_ROW = 512


@dataclass
class Packing:
    rows: int
    where: tuple[torch.Tensor, torch.Tensor]  # (example, position) of every real token
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


def plan(attention_mask: torch.Tensor, weights_per_layer: int, hidden: int) -> Packing | None:
    """The cheapest way to run a right-padded batch: a packing, or None for the padded batch as it is."""
    real = attention_mask.bool()
    lengths = real.sum(1).tolist()
    batch, width = attention_mask.shape
    best, best_cost = None, cost(batch, width, weights_per_layer, hidden)
    for capacity in _capacities(width, sum(lengths), max(MAX_ROW, width)):
        row_of, offset_of = rows_for(lengths, capacity)
        packed_cost = cost(max(row_of, default=0) + 1, capacity, weights_per_layer, hidden)
        if packed_cost < best_cost:
            best, best_cost = (capacity, row_of, offset_of), packed_cost
    return None if best is None else _packing(real, *best)


def _capacities(longest: int, total: int, limit: int) -> list[int]:
    """Row widths to try: the padded width, doubled while it fits, and all in one row if that fits."""
    capacities, capacity = [], longest
    while capacity < total and capacity <= limit:
        capacities.append(capacity)
        capacity *= 2
    return capacities + ([total] if total <= limit else [])


def _packing(real: torch.Tensor, width: int, row_of: list[int], offset_of: list[int]) -> Packing:
    device = real.device
    rows = max(row_of) + 1
    where = real.nonzero(as_tuple=True)
    example, position = where
    slots = (torch.tensor(row_of, device=device)[example], torch.tensor(offset_of, device=device)[example] + position)
    positions = torch.zeros(rows, width, dtype=torch.long, device=device).index_put(slots, position)
    owner = torch.full((rows, width), -1, dtype=torch.long, device=device).index_put(slots, example)
    same = owner[:, :, None] == owner[:, None, :]  # padding slots see only padding slots: no empty softmax
    earlier = positions[:, None, :] <= positions[:, :, None]
    return Packing(rows, where, slots, positions, (same & earlier)[:, None])


def pack(states: torch.Tensor, packing: Packing) -> torch.Tensor:
    """[B, L, H] -> [R, W, H]: every real token in its slot, padding slots zero."""
    packed = states.new_zeros(packing.rows, packing.positions.shape[1], states.shape[2])
    return packed.index_put(packing.slots, states[packing.where])


def unpack(packed: torch.Tensor, packing: Packing, shape: torch.Size) -> torch.Tensor:
    """[R, W, H] -> [B, L, H]: every real token back in its row; padding positions hold zeros."""
    out = packed.new_zeros(shape[0], shape[1], packed.shape[2])
    return out.index_put(packing.where, packed[packing.slots])
