"""Numeric precision: fp32, or bf16 with the backbone held in bf16 and fp32 master copies of what trains.

Under bf16 the backbone's weights are cast once, when the method is built, instead of autocast re-casting all of
them at every forward (and casting their gradients back at every backward). The method's own small modules
(soft prompts, prompt encoders, linear heads) stay in fp32 and run under autocast. Backbone weights that train
(fine-tuning, PET) are updated through fp32 master copies: the optimizer steps the masters, which are then copied
into the bf16 weights, so small updates are not rounded away.
"""

from contextlib import nullcontext
from functools import cache
from pathlib import Path

import torch
from torch import nn


def bf16_supported(device: torch.device) -> bool:
    """Hardware bf16: a GPU that has it, or a CPU with AMX or AVX-512 BF16 instructions."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(_cpu_flags() & {"amx_bf16", "avx512_bf16"})


@cache
def _cpu_flags() -> frozenset[str]:
    cpuinfo = Path("/proc/cpuinfo")
    return frozenset(cpuinfo.read_text().split()) if cpuinfo.exists() else frozenset()


def resolve(precision: str, device: torch.device) -> str:
    """fp32 or bf16; `auto` is bf16 where the hardware supports it."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    if resolve(precision, device) == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def hold_backbone(method: nn.Module, precision: str, device: torch.device) -> None:
    """Under bf16, cast the backbone's weights to bf16 once; the method's own modules stay fp32."""
    if resolve(precision, device) == "bf16":
        method.backbone.to(torch.bfloat16)


class MasterCopies:
    """fp32 master copies of the trainable parameters that are not fp32; the optimizer works on the masters.

    `groups` are the optimizer's parameter groups with every such parameter replaced by its master.
    """

    def __init__(self, groups: list[dict]):
        self.model: list[nn.Parameter] = []
        self.masters: list[torch.Tensor] = []
        self.groups = [group | {"params": [self._master_of(p) for p in group["params"]]} for group in groups]

    def _master_of(self, param: nn.Parameter) -> torch.Tensor:
        if param.dtype == torch.float32:
            return param
        master = param.detach().float().requires_grad_(True)
        self.model.append(param)
        self.masters.append(master)
        return master

    def parameters(self) -> list[torch.Tensor]:
        return [p for group in self.groups for p in group["params"]]

    def gradients_to_masters(self) -> None:
        for param, master in zip(self.model, self.masters, strict=True):
            master.grad = None if param.grad is None else param.grad.float()
            param.grad = None

    @torch.no_grad()
    def masters_to_model(self) -> None:
        if self.model:
            torch._foreach_copy_(self.model, self.masters)

    @torch.no_grad()
    def load(self, masters: list[torch.Tensor]) -> None:
        """Restore saved masters (a resumed bf16 run continues from the fp32 values, not their bf16 rounding)."""
        if len(masters) != len(self.masters):
            raise ValueError(f"{len(masters)} saved master copies for {len(self.masters)} parameters")
        if self.masters:
            torch._foreach_copy_(self.masters, masters)

    @torch.no_grad()
    def model_to_masters(self) -> None:
        """After the model's weights were replaced (e.g. a checkpoint loaded), start the masters from them."""
        if self.model:
            torch._foreach_copy_(self.masters, self.model)


def adamw(groups: list[dict], device: torch.device) -> torch.optim.AdamW:
    """AdamW with its fused kernel (one pass over all parameters) where torch has one for the device."""
    return torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda"))
