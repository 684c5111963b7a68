"""FLOPs of what runs, estimated from the model's transformer layers and the token rows that enter them.

A hook on the first transformer layer counts, for every forward, the rows B and the padded length L that the
layers process (padding runs too, so it counts). Per forward of the layers:
  matmuls with weights: 2 * P * B * L      (P: the weights of the layers' linear maps)
  attention:            4 * layers * H * B * L^2   (scores and the weighted sum, H: hidden size)
A training step adds, when a gradient has to flow through the layers (anything at or below them trains), the
gradients of the activations (as much again for the matmuls, twice for attention), and 2 * P_trainable * B * L
for the weights that train; frozen weights get no weight gradient. Embedding look-ups, norms, the small heads and
the optimizer are left out: next to the layers' matmuls they are a few percent.
"""

from dataclasses import dataclass

import torch
from torch import nn

from prompttune.models.backbone import layer_linears


@dataclass
class Usage:
    tokens: int = 0  # sum of B * L
    squares: int = 0  # sum of B * L^2


class FlopCounter:
    """Counts the tokens the layers process, apart for forwards with gradients (training) and without (evaluation)."""

    def __init__(self, method: nn.Module):
        backbone = method.backbone
        layers = backbone.prompt_layers()
        self.n_layers = len(layers)
        self.hidden = backbone.hidden_size
        linears = layer_linears(layers)
        self.weights = sum(m.weight.numel() for m in linears)
        self.trainable_weights = sum(m.weight.numel() for m in linears if m.weight.requires_grad)
        below = [p for layer in layers for p in layer.parameters()]
        below += [*backbone.embeddings.parameters(), *method.prompt_parameters()]
        self.gradient_flows = any(p.requires_grad for p in below)
        self.train, self.eval = Usage(), Usage()
        self._handle = layers[0].register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _module, args, kwargs):
        states = args[0] if args else kwargs["hidden_states"]
        rows, length = states.shape[0], states.shape[1]
        usage = self.train if torch.is_grad_enabled() else self.eval
        usage.tokens += rows * length
        usage.squares += rows * length * length

    def forward_flops(self, usage: Usage) -> float:
        return 2.0 * self.weights * usage.tokens + 4.0 * self.n_layers * self.hidden * usage.squares

    def training_flops(self, usage: Usage) -> float:
        flops = self.forward_flops(usage)
        if self.gradient_flows:
            flops += 2.0 * self.weights * usage.tokens + 8.0 * self.n_layers * self.hidden * usage.squares
        return flops + 2.0 * self.trainable_weights * usage.tokens

    def reset_eval(self) -> None:
        self.eval = Usage()

    def close(self) -> None:
        self._handle.remove()


def throughput(
    counter: FlopCounter, steps: int, steps_here: int, train_seconds: float, n_eval: int, eval_seconds: float
) -> dict:
    """FLOPs per training step and per evaluated example, and the FLOP/s achieved, for metrics.json. `steps_here`:
    the steps this process ran (fewer than `steps` after a resume); a step may run the layers more than once
    (PET's auxiliary LM loss, a shared prefix run apart)."""
    per_step = counter.training_flops(counter.train) / steps_here if steps_here else 0.0
    per_example = counter.forward_flops(counter.eval) / n_eval if n_eval else 0.0
    return {
        "flops_per_train_step": per_step,
        "train_flop_per_second": per_step * steps / train_seconds if train_seconds else None,
        "flops_per_eval_example": per_example,
        "eval_flop_per_second": per_example * n_eval / eval_seconds if eval_seconds else None,
    }
