"""Where a training step's time goes: torch.profiler over one step of a method, after two warm-up steps.

    .venv/bin/python scripts/profile_step.py pet bf16 [--model smollm2_135m] [--rows 15]

Prints the operators by their own CPU time. The batch is the benchmark's (8 mr reviews, its pattern).
"""

import argparse

import torch
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

from prompttune.benchmarks.peft_peers import PATTERN
from prompttune.config.run import register_configs
from prompttune.data import load_splits
from prompttune.paths import CONFIG_DIR
from prompttune.prompts.encoding import collate
from prompttune.runs.jobs import quiet_libraries
from prompttune.runs.lifecycle import build
from prompttune.training.loop import _step
from prompttune.training.precision import MasterCopies, adamw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("precision", choices=["fp32", "bf16"])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    quiet_libraries()
    register_configs()
    overrides = [f"method={args.method}", f"model={args.model}", "dataset=mr", "trainer.device=cpu"]
    overrides += [f"trainer.precision={args.precision}", f"method.template='{PATTERN}'"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    setup = build(cfg, has_text_b=False)
    method = setup.method
    examples = load_splits(cfg.dataset, int(cfg.shots), int(cfg.seed)).train[:8]
    batch = collate(method.encode(examples), method.backbone.tokenizer.pad_token_id)
    masters = MasterCopies(method.param_groups(cfg.trainer.lr, cfg.trainer.prompt_lr, cfg.trainer.weight_decay))
    optimizer = adamw(masters.groups, setup.device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    method.train()
    for _ in range(2):
        _step(method, batch, optimizer, schedule, masters, cfg.trainer, setup.device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(method, batch, optimizer, schedule, masters, cfg.trainer, setup.device)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
