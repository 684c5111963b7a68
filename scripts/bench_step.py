"""Benchmark: seconds per training step (and peak memory) of methods and precisions on the same batch.

    .venv/bin/python scripts/bench_step.py --methods finetune pet --precisions fp32 bf16 --model smollm2_135m

Each combination runs in its own process, so peak memory (max RSS on CPU) is that combination's alone.
"""

import argparse
import json
import subprocess
import sys
import time

TEXTS = [
    "A gripping, beautifully acted drama that never lets go.",
    "Tedious and overlong; the jokes fall flat from the first scene.",
]


def measure(method: str, precision: str, model: str, steps: int, batch_size: int) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from prompttune.data.records import Example
    from prompttune.experiment import build
    from prompttune.jobs import quiet_libraries
    from prompttune.paths import CONFIG_DIR
    from prompttune.probes import peak_memory_mb
    from prompttune.prompts.encoding import collate
    from prompttune.training.loop import _step

    quiet_libraries()
    overrides = [f"method={method}", f"model={model}", f"trainer.precision={precision}", "trainer.device=cpu"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    setup = build(cfg, has_text_b=False)
    method_module = setup.method
    examples = [Example(str(i), TEXTS[i % 2], (i + 1) % 2) for i in range(batch_size)]
    batch = collate(method_module.encode(examples), method_module.backbone.tokenizer.pad_token_id)
    groups = method_module.param_groups(cfg.trainer.lr, cfg.trainer.prompt_lr, cfg.trainer.weight_decay)
    optimizer = torch.optim.AdamW(groups)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainable = [p for g in groups for p in g["params"]]
    method_module.train()
    _step(method_module, batch, optimizer, schedule, trainable, cfg.trainer, setup.device)  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        _step(method_module, batch, optimizer, schedule, trainable, cfg.trainer, setup.device)
    seconds = (time.perf_counter() - started) / steps
    return {
        "method": method,
        "precision": precision,
        "seconds_per_step": round(seconds, 3),
        "tokens_per_example": int(batch["attention_mask"].sum(1).float().mean()),
        "trainable": method_module.parameter_counts()["trainable"],
        "peak_memory_mb": round(peak_memory_mb(setup.device)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["finetune", "pet"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.model, args.steps, args.batch_size)))
        return
    rows = []
    for method in args.methods:
        for precision in args.precisions:
            command = [
                sys.executable,
                __file__,
                "--one",
                method,
                precision,
                "--model",
                args.model,
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method | precision | s/step (batch {args.batch_size}) | trainable | peak MB |\n|---|---|---|---|---|")
    for r in rows:
        cells = [r["method"], r["precision"], r["seconds_per_step"], f"{r['trainable']:,}", r["peak_memory_mb"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
