"""Where bf16 loses accuracy (issue 24): the same training batches through fp32 and this tool's bf16 path.

    .venv/bin/python scripts/compare_precision.py [--methods pet finetune] [--batches 2] [--out precision.json]

Each method is built as `prompttune train` builds it (runs.lifecycle.build: mr, K=16, seed 13, SmolLM2-135M; under
trainer.precision=bf16 the backbone is held in bf16) and takes the first batches of 8 in the training loop's order.
Forward and backward run as the loop's _step runs them (training_loss under precision.autocast, then backward),
from the same weights, in: fp32 (the reference); `bf16 before`, the label-word logits in bf16 as before issue 24
(Backbone.fp32_word_logits off; pet only); `bf16`, the tool's path; `+score32`, finetune's score layer in fp32;
`+norm32`, every RMSNorm wholly in fp32, the final one's output left in fp32; `+attn32`, SDPA on fp32 queries,
keys and values; `amp`, fp32 weights under autocast (the usual mixed precision: the residual stream stays fp32).
Printed: hidden-state errors per layer, the loss, the gradients' cosine and norm ratio against fp32, the class
logits, the aten ops of the bf16 pass that an autocast fp32 list names, and how many bf16 weights an Adam-sized
move changes. PET's auxiliary LM loss (weight 1e-4) is left out. On a CPU without bf16 units bf16 is emulated: the
numbers hold, the time does not and is not reported.
"""

import argparse
import json
import re
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager, nullcontext
from unittest import mock

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from prompttune.config.run import register_configs
from prompttune.data import load_splits
from prompttune.models import packing
from prompttune.models.backbone import Backbone
from prompttune.paths import CONFIG_DIR
from prompttune.runs.jobs import quiet_libraries
from prompttune.runs.lifecycle import build
from prompttune.training import precision
from prompttune.training.loop import batches

BF16, CPU = torch.bfloat16, torch.device("cpu")
# CUDA autocast's fp32 ops (torch 2.13, ATen/autocast_mode.h: AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE, norm)
CUDA_FP32 = set(
    "acos asin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan pow softplus layer_norm rms_norm "
    "group_norm frobenius_norm nuclear_norm cosine_similarity poisson_nll_loss cosine_embedding_loss nll_loss "
    "nll_loss2d hinge_embedding_loss kl_div l1_loss smooth_l1_loss huber_loss mse_loss margin_ranking_loss "
    "multilabel_margin_loss soft_margin_loss triplet_margin_loss multi_margin_loss binary_cross_entropy_with_logits "
    "dist pdist cdist renorm logsumexp prod softmax log_softmax cumprod cumsum linalg_vector_norm linalg_matrix_norm "
    "sum norm".split()
)
FAMILY = {  # aten ops, forward and backward -> the op autocast sees
    "_softmax": "softmax", "_softmax_backward_data": "softmax", "_log_softmax": "log_softmax",
    "_log_softmax_backward_data": "log_softmax", "nll_loss_forward": "nll_loss", "nll_loss_backward": "nll_loss",
    "native_layer_norm": "layer_norm", "_fused_rms_norm": "rms_norm",
}  # fmt: skip
CPU_PROBES = {  # CPU autocast's policy, probed on this torch: does a bf16 input come out in fp32?
    "softmax": lambda x: x.softmax(-1), "log_softmax": lambda x: x.log_softmax(-1), "pow": lambda x: x.pow(2),
    "sum": lambda x: x.sum(-1), "mean": lambda x: x.mean(-1), "rsqrt": lambda x: x.rsqrt(), "exp": lambda x: x.exp(),
    "logsumexp": lambda x: x.logsumexp(-1), "rms_norm": lambda x: F.rms_norm(x, (8,)),
    "layer_norm": lambda x: F.layer_norm(x, (8,)), "nll_loss": lambda x: F.nll_loss(x, torch.zeros(4).long()),
}  # fmt: skip
# Adam-sized moves (lr per weight per step), summed: one step at 2e-5 or 1e-4; the 40-step budget at 2e-5 (warmup
# 4 steps, then linear decay: 20 x the peak lr), an upper bound, as if every step kept its sign
MOVES = {"1 step at 2e-5": 2e-5, "1 step at 1e-4": 1e-4, "40 steps at 2e-5 (sum 4e-4)": 4e-4}


class OpRecorder(TorchDispatchMode):
    """Counts every aten op by (op, dtype of its first floating input, forward or backward)."""

    def __init__(self):
        super().__init__()
        self.phase, self.counts = "fwd", Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        floats = [a.dtype for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        if floats:
            self.counts[(func.overloadpacket.__name__, str(floats[0]).removeprefix("torch."), self.phase)] += 1
        return func(*args, **(kwargs or {}))


def bf16_word_logits(method):
    """The path before issue 24: label-word logits at the mask computed (and rounded) in bf16."""
    return mock.patch.object(Backbone, "fp32_word_logits", False)


def score32(method):
    """finetune's score layer (a new fp32 linear, run under autocast) in fp32."""
    linear = method.head.classifier

    def forward(x):
        with torch.autocast("cpu", enabled=False):
            return F.linear(x.float(), linear.weight, linear.bias)

    return mock.patch.object(linear, "forward", forward)


@contextmanager
def norm32(method):
    """RMSNorm with its weight applied in fp32 and one rounding; the final norm's output stays fp32 (+score32)."""
    final = method.backbone.body.norm

    def forward(self, hidden):
        h = hidden.float()
        out = self.weight.float() * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
        return out if self is final else out.to(hidden.dtype)

    with (
        mock.patch.object(LlamaRMSNorm, "forward", forward),
        score32(method) if not verbalized(method) else nullcontext(),
    ):
        yield


def attn32(method):
    """SDPA on fp32 queries, keys and values (autocast off: it would cast them back to bf16)."""

    def sdpa(module, query, key, value, mask, **kwargs):
        mask = mask.float() if mask is not None and mask.is_floating_point() else mask
        with torch.autocast("cpu", enabled=False):
            out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, **kwargs)
        return out.to(query.dtype), weights

    return mock.patch.dict(AttentionInterface._global_mapping, {"sdpa": sdpa})


def verbalized(method) -> bool:
    return hasattr(method.head, "verbalizer")


# name -> (patch, which methods it applies to)
VARIANTS = {
    "bf16 before": (bf16_word_logits, verbalized),
    "bf16": (nullcontext, None),
    "+score32": (score32, lambda m: not verbalized(m)),
    "+norm32": (norm32, None),
    "+attn32": (attn32, None),
}


def run(method, batch, amp: bool, patch, recorder=None) -> dict:
    """One forward + backward as training/loop.py's _step runs it: states per layer, class logits, loss, grads."""
    states, logits = [], []

    def keep(_module, _args, out):
        states.append(out[0] if type(out) is tuple else out)

    hooks = [layer.register_forward_hook(keep) for layer in method.backbone.prompt_layers()]
    hooks.append(method.backbone.body.register_forward_hook(lambda m, a, out: states.append(out.last_hidden_state)))
    hooks.append(method.head.register_forward_hook(lambda m, a, out: logits.append(out.detach().float())))
    method.zero_grad(set_to_none=True)
    with ExitStack() as stack:
        stack.enter_context(patch(method))
        if recorder:
            stack.enter_context(recorder)
        with precision.autocast(CPU, "bf16" if amp else "fp32"):
            loss = method.training_loss(batch)
        if recorder:
            recorder.phase = "bwd"
        loss.backward()
    for hook in hooks:
        hook.remove()
    mask = batch["attention_mask"]
    if states[0].shape[:2] == mask.shape:
        real = mask.bool()
    else:  # the batch ran packed (models/packing.py): the real tokens' slots
        plan = packing.plan(mask, *method.backbone._layer_size())
        real = torch.zeros(plan.positions.shape, dtype=torch.bool).index_put(plan.slots, torch.tensor(True))
    grads = {n: p.grad.float() for n, p in method.named_parameters() if p.grad is not None}
    return {"states": [s.float()[real] for s in states], "logits": logits[0], "loss": loss.item(), "grads": grads}


def gradient_stats(grads: dict, reference: dict) -> dict[str, dict]:
    """Cosine and norm ratio against the reference: all, per layer, per kind of layer weight, per other weight."""
    sums = defaultdict(lambda: torch.zeros(3, dtype=torch.float64))
    for name, ref in reference.items():
        got, found = grads[name], re.search(r"layers\.(\d+)\.(.+)", name)
        parts = torch.stack([(got * ref).sum(), (got * got).sum(), (ref * ref).sum()]).double()
        keys = [f"layer {found[1]}", f"kind {found[2]}"] if found else [".".join(name.split(".")[-2:])]
        for key in ["all", *keys]:
            sums[key] += parts
    return {k: {"cos": float(d / (b * r).sqrt()), "norm_ratio": float((b / r).sqrt())} for k, (d, b, r) in sums.items()}


def compare(got: dict, ref: dict) -> dict:
    pairs = list(zip(got["states"], ref["states"], strict=True))
    diff = got["logits"].log_softmax(-1) - ref["logits"].log_softmax(-1)
    return {
        "loss": got["loss"],
        "loss_diff": got["loss"] - ref["loss"],
        "logit_max_diff": (got["logits"] - ref["logits"]).abs().max().item(),
        "class_logprob_max_diff": diff.abs().max().item(),
        "argmax_flips": int((got["logits"].argmax(-1) != ref["logits"].argmax(-1)).sum()),
        "state_rel_error": [((g - r).norm() / r.norm()).item() for g, r in pairs],
        "state_max_abs_error": [(g - r).abs().max().item() for g, r in pairs],
        "state_max_abs": [r.abs().max().item() for r in ref["states"]],
        "grads": gradient_stats(got["grads"], ref["grads"]),
    }


@torch.no_grad()
def update_resolution(method, grads: dict, weight_decay: float = 0.01) -> dict[str, dict]:
    """AdamW's first step exactly (w(1 - lr wd) - lr g / (|g| + eps)), scaled to each move, on the fp32 weights: the
    share of their bf16 copies that change, and the error of the move the bf16 copies make."""
    out = {}
    for label, lr in MOVES.items():
        changed = total = error = size = 0.0
        for name, p in method.named_parameters():
            if name in grads and name.startswith("backbone."):
                g = grads[name]
                move = -lr * (g / (g.abs() + 1e-8) + weight_decay * p)
                moved = (p + move).to(BF16).float() - p.to(BF16).float()
                total, changed = total + (g != 0).sum().item(), changed + ((g != 0) & (moved != 0)).sum().item()
                error, size = error + (moved - move).pow(2).sum().item(), size + move.pow(2).sum().item()
        out[label] = {"changed_share": changed / total, "rel_error": (error / size) ** 0.5}
    return out


def build_method(name: str, prec: str, seed: int):
    overrides = [f"method={name}", "model=smollm2_135m", "dataset=mr", "shots=16", f"seed={seed}", "trainer.device=cpu"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides + [f"trainer.precision={prec}"])
    method = build(cfg, has_text_b=False).method
    splits = load_splits(cfg.dataset, 16, seed)
    method.fit_examples(splits.train, splits.dev)
    method.train()
    return method, method.encode(splits.train)


def measure(name: str, seed: int, n_batches: int) -> dict:
    reference, encoded = build_method(name, "fp32", seed)
    held, _ = build_method(name, "bf16", seed)
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed)).tolist()  # the loop's order
    chosen = [b for _, b in zip(range(n_batches), batches(encoded, 8, reference.pad_token_id, order), strict=False)]
    recorder, results, previous = OpRecorder(), defaultdict(list), None
    for i, batch in enumerate(chosen):
        ref = run(reference, batch, False, nullcontext)
        results["moves"].append(update_resolution(reference, ref["grads"]))
        if previous is not None:  # the scale of SGD's own noise: the gradient of another batch
            results["other batch"].append(gradient_stats(ref["grads"], previous)["all"])
        previous = ref["grads"]
        for variant, (patch, applies) in VARIANTS.items():
            if applies is None or applies(held):
                got = run(held, batch, True, patch, recorder if variant == "bf16" and i == 0 else None)
                results[variant].append(compare(got, ref))
        results["amp"].append(compare(run(reference, batch, True, nullcontext), ref))
    return {"results": dict(results), "ops": [[*k, v] for k, v in sorted(recorder.counts.items())]}


def mean(values: list):
    if isinstance(values[0], dict):
        return {k: mean([v[k] for v in values]) for k in values[0]}
    if isinstance(values[0], list):
        return [mean(list(v)) for v in zip(*values, strict=True)]
    return sum(values) / len(values)


def header(*columns: str) -> None:
    print("\n| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")


def report(name: str, measured: dict, cpu_fp32: set[str]) -> None:
    res = {k: mean(v) for k, v in measured["results"].items()}
    tool, n = res["bf16"], len(res["bf16"]["state_rel_error"])
    print(f"\n## {name} (mean of {len(measured['results']['bf16'])} batches)")
    header("bf16", "state rel. error", "max abs error", "max abs (fp32)", "grad cos", "grad norm ratio")
    for i in range(n):
        g = tool["grads"][f"layer {i}" if i < n - 1 else "norm.weight"]
        label = f"layer {i}" if i < n - 1 else "final norm"
        err, mx, ref = tool["state_rel_error"][i], tool["state_max_abs_error"][i], tool["state_max_abs"][i]
        print(f"| {label} | {err:.4f} | {mx:.3g} | {ref:.3g} | {g['cos']:.5f} | {g['norm_ratio']:.4f} |")
    header("bf16 gradient group", "cos", "norm ratio")
    for key, g in tool["grads"].items():
        if not key.startswith("layer "):
            print(f"| {key} | {g['cos']:.5f} | {g['norm_ratio']:.4f} |")
    columns = ["loss", "loss - fp32", "max abs logit diff", "max abs class log-prob diff", "argmax flips"]
    header("variant", *columns, "grad cos", "grad norm ratio", "min layer cos", "final state rel. error")
    print(f"| fp32 | {tool['loss'] - tool['loss_diff']:.5f} | 0 | 0 | 0 | 0 | 1 | 1 | 1 | 0 |")
    for variant, r in res.items():
        if variant not in ("moves", "other batch"):
            layer_cos = min(g["cos"] for k, g in r["grads"].items() if k.startswith("layer "))
            all_g, flips = r["grads"]["all"], sum(x["argmax_flips"] for x in measured["results"][variant])
            print(
                f"| {variant} | {r['loss']:.5f} | {r['loss_diff']:+.2e} | {r['logit_max_diff']:.4f} | "
                f"{r['class_logprob_max_diff']:.4f} | {flips} | {all_g['cos']:.5f} | {all_g['norm_ratio']:.4f} | "
                f"{layer_cos:.5f} | {r['state_rel_error'][-1]:.4f} |"
            )
    if "other batch" in res:
        other = res["other batch"]
        print(f"\nfp32 gradients of consecutive batches: cos {other['cos']:.4f}, norm ratio {other['norm_ratio']:.3f}")
    header("Adam-sized move", "bf16 weights that change (of those with a gradient)", "rel. error of the move")
    for move, s in res["moves"].items():
        print(f"| {move} | {s['changed_share']:.1%} | {s['rel_error']:.2f} |")
    header("op (bf16 pass)", "input dtype", "fwd", "bwd", "CUDA autocast: fp32", "CPU autocast: fp32 (probed)")
    by_op = defaultdict(lambda: [0, 0])
    for op, dtype, phase, count in measured["ops"]:
        family = FAMILY.get(op, op)
        if family in CUDA_FP32 | cpu_fp32 or "attention" in op:
            by_op[(op, family, dtype)][phase == "bwd"] += count
    for (op, family, dtype), (fwd, bwd) in sorted(by_op.items(), key=lambda kv: kv[0][2]):
        cpu = "yes" if family in cpu_fp32 else ("no" if family in CPU_PROBES else "-")
        print(f"| {op} | {dtype} | {fwd} | {bwd} | {'yes' if family in CUDA_FP32 else 'no'} | {cpu} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["pet", "finetune"])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", help="write the measurements as JSON")
    args = parser.parse_args()
    quiet_libraries()
    register_configs()
    x = torch.randn(4, 8, dtype=BF16)
    with torch.autocast("cpu", dtype=BF16):
        cpu_fp32 = {name for name, probe in CPU_PROBES.items() if probe(x).dtype == torch.float32}
    print(f"CPU autocast keeps in fp32 (probed): {sorted(cpu_fp32)}; not: {sorted(set(CPU_PROBES) - cpu_fp32)}")
    measured = {name: measure(name, args.seed, args.batches) for name in args.methods}
    for name, m in measured.items():
        report(name, m, cpu_fp32)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"seed": args.seed, "batches": args.batches, "cpu_fp32": sorted(cpu_fp32)} | measured, f)


if __name__ == "__main__":
    main()
