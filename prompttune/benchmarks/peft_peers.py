"""`prompttune bench`: every method against its PEFT (or plain transformers) counterpart, fp32 and bf16.

Every cell runs in its own process (so its peak memory is its own) on the same model, the same batch of mr
reviews and the same pattern, and reports the median seconds of training steps after a warm-up, trainable
parameters, tokens per example, peak memory, and evaluation examples per second (and accuracy) on test reviews.
A matmul loop first measures this machine's fp32 and bf16 matmul peak, so each step's FLOP/s can be read as a
fraction of it. The peer side needs `peft` (requirements/bench.txt, installed by `make bench`).
"""

import json
import statistics
import subprocess
import sys
import time

PATTERN = "{text_a} The movie was {mask}."
METHODS = ("pet", "finetune", "prompt_tuning", "ptuning_v1", "ptuning_v2")
PEERS = {
    "pet": "full fine-tuning, HF causal LM",
    "finetune": "HF AutoModelForSequenceClassification",
    "prompt_tuning": "PEFT PromptTuningConfig(20)",
    "ptuning_v1": "PEFT PromptEncoderConfig(6, LSTM)",
    "ptuning_v2": "PEFT PrefixTuningConfig(16)",
}


def matmul_peak(dtype_name: str, size: int = 1536, repeats: int = 12) -> float:
    """FLOP/s of a square matmul in this dtype: the median over repeats."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times)


def _data(cfg, batch_size: int, n_eval: int):
    from prompttune.data import load_splits

    splits = load_splits(cfg.dataset, int(cfg.shots), int(cfg.seed))
    return splits.train[:batch_size], splits.test[:n_eval]


def _timed_steps(step, steps: int) -> list[float]:
    step()  # warm-up: one-off allocations and kernel choices
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def _timed_eval(evaluate, n: int) -> tuple[float, float]:
    started = time.perf_counter()
    accuracy = evaluate()
    return n / (time.perf_counter() - started), accuracy


# Settings that make a cell compare like with like: PEFT's PromptEncoder trains the encoder over a frozen LM (the
# CPU budget of ptuning_v1 tunes the LM too), and the peer scores the label words with the LM head.
LIKE_THE_PEER = {"ptuning_v1": ["method.freeze_backbone=true"], "ptuning_v2": ["method.head=verbalizer"]}


def ours(method: str, precision: str, args) -> dict:
    """This tool's cell: the method built from its config, stepped by the training loop's own step."""
    import torch
    from hydra import compose, initialize_config_dir

    from prompttune.config.run import register_configs
    from prompttune.paths import CONFIG_DIR
    from prompttune.prompts.encoding import collate
    from prompttune.runs.lifecycle import build
    from prompttune.runs.probes import peak_memory_mb
    from prompttune.training.flops import FlopCounter
    from prompttune.training.loop import _step, predict
    from prompttune.training.precision import MasterCopies, adamw

    overrides = [f"method={method}", f"model={args.model}", "dataset=mr", f"trainer.precision={precision}"]
    overrides += ["trainer.device=cpu", f"method.template='{PATTERN}'", f"trainer.eval_batch_size={args.eval_batch}"]
    overrides += LIKE_THE_PEER.get(method, [])
    overrides += ["trainer.compile=true"] if args.compile else []
    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    setup = build(cfg, has_text_b=False)
    model, device = setup.method, setup.device
    train, test = _data(cfg, args.batch_size, args.eval_examples)
    encoded_test = model.encode(test)
    labels = torch.tensor([e.label for e in test])
    predict(model, encoded_test[: args.eval_batch], cfg.trainer, device)  # warm-up
    eval_rate, accuracy = _timed_eval(
        lambda: (predict(model, encoded_test, cfg.trainer, device).argmax(-1) == labels).float().mean().item(),
        len(test),
    )
    batch = collate(model.encode(train), model.backbone.tokenizer.pad_token_id)
    groups = model.param_groups(cfg.trainer.lr, cfg.trainer.prompt_lr, cfg.trainer.weight_decay)
    masters = MasterCopies(groups)
    optimizer = adamw(masters.groups, device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model.train()
    counter = FlopCounter(model)
    times = _timed_steps(lambda: _step(model, batch, optimizer, schedule, masters, cfg.trainer, device), args.steps)
    counter.close()
    return {
        "seconds_per_step": statistics.median(times),
        "flops_per_step": counter.training_flops(counter.train) / (args.steps + 1),
        "trainable": model.parameter_counts()["trainable"],
        "tokens_per_example": batch["attention_mask"].sum(1).float().mean().item(),
        "peak_memory_mb": peak_memory_mb(device),
        "eval_examples_per_second": eval_rate,
        "eval_accuracy": accuracy,
    }


def peer(method: str, precision: str, args) -> dict:
    """The counterpart as a PEFT / transformers user writes it: plain AdamW, autocast for bf16, full logits."""
    import torch
    from hydra import compose, initialize_config_dir
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from prompttune.config.run import register_configs
    from prompttune.models.loading import FAMILIES, converted_gguf_folder
    from prompttune.paths import CONFIG_DIR
    from prompttune.prompts.encoding import TemplateEncoder, collate
    from prompttune.prompts.template import parse_template
    from prompttune.runs.probes import peak_memory_mb

    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={args.model}", "dataset=mr"])
    folder = converted_gguf_folder(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(int(cfg.seed))
    if method == "finetune":
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        model = _peft_wrapped(model, method)
    words = torch.tensor([tokenizer(" " + w[0], add_special_tokens=False)["input_ids"][0] for w in _label_words(cfg)])
    encoder = TemplateEncoder(parse_template(PATTERN), tokenizer, FAMILIES["causal"], int(cfg.model.max_length))
    train, test = _data(cfg, args.batch_size, args.eval_examples)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def logits_of(batch):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if method == "finetune":
            return out.float()
        last = batch["attention_mask"].sum(1) - 1
        out = out[:, -batch["input_ids"].shape[1] :]  # PEFT puts its virtual tokens first
        return out[torch.arange(len(last)), last][:, words].float()

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad(), amp:
            for start in range(0, len(test), args.eval_batch):
                chunk = test[start : start + args.eval_batch]
                batch = collate(encoder.encode(chunk), tokenizer.pad_token_id)
                correct += (logits_of(batch).argmax(-1) == batch["labels"]).sum().item()
        return correct / len(test)

    model.eval()
    with torch.no_grad(), amp:
        logits_of(collate(encoder.encode(test[: args.eval_batch]), tokenizer.pad_token_id))  # warm-up
    eval_rate, accuracy = _timed_eval(evaluate, len(test))
    batch = collate(encoder.encode(train), tokenizer.pad_token_id)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-5 if method in ("pet", "finetune") else 1e-3)

    def step():
        with amp:
            logits = logits_of(batch)
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()

    model.train()
    times = _timed_steps(step, args.steps)
    virtual = getattr(getattr(model, "peft_config", {}).get("default"), "num_virtual_tokens", 0)
    in_sequence = virtual if method in ("prompt_tuning", "ptuning_v1") else 0  # prefixes sit in the cache only
    return {
        "seconds_per_step": statistics.median(times),
        "trainable": sum(p.numel() for p in trainable),
        "tokens_per_example": batch["attention_mask"].sum(1).float().mean().item() + in_sequence,
        "peak_memory_mb": peak_memory_mb(torch.device("cpu")),
        "eval_examples_per_second": eval_rate,
        "eval_accuracy": accuracy,
    }


def _label_words(cfg) -> list[list[str]]:
    verbalizer = cfg.dataset.patterns[0].verbalizer
    return [list(verbalizer[label]) for label in cfg.dataset.labels]


def _peft_wrapped(model, method: str):
    if method == "pet":
        return model
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model

    hidden = model.config.hidden_size
    config = {
        "prompt_tuning": lambda: PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=20),
        "ptuning_v1": lambda: PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=6,
            encoder_reparameterization_type="LSTM",
            encoder_hidden_size=hidden,
        ),
        "ptuning_v2": lambda: PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=16),
    }[method]()
    return get_peft_model(model, config)


def run_cell(side: str, method: str, precision: str, args) -> dict:
    command = [
        sys.executable,
        "-m",
        "prompttune.commands.bench",
        "--cell",
        side,
        method,
        precision,
        *_shared(args),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shared(args) -> list[str]:
    keys = ("model", "steps", "batch_size", "eval_examples", "eval_batch")
    shared = [item for key in keys for item in (f"--{key.replace('_', '-')}", str(getattr(args, key)))]
    return shared + (["--compile"] if args.compile else [])


def table(results: dict, peaks: dict, precisions: list[str]) -> str:
    head = (
        "| method | vs | precision | s/step ours / peer | ratio | ours vs own fp32 | trainable ours / peer "
        "| tokens/example | peak MB | eval ex/s ours / peer | eval acc ours / peer | GFLOP/step | % of matmul peak |"
    )
    lines = [head, "|" + "---|" * 13]
    for (method, precision), cell in results.items():
        o, p = cell["ours"], cell["peer"]
        if "error" in o or "error" in p:
            lines.append(f"| {method} | {PEERS[method]} | {precision} | {o.get('error', '')} {p.get('error', '')} |")
            continue
        fp32 = results.get((method, "fp32"), {}).get("ours", {})
        own = fp32.get("seconds_per_step", 0) / o["seconds_per_step"] if "seconds_per_step" in fp32 else None
        achieved = o["flops_per_step"] / o["seconds_per_step"]
        cells = [
            method,
            PEERS[method],
            precision,
            f"{o['seconds_per_step']:.2f} / {p['seconds_per_step']:.2f}",
            f"{p['seconds_per_step'] / o['seconds_per_step']:.2f}x",
            f"{own:.2f}x" if own and precision != "fp32" else "-",
            f"{_count(o['trainable'])} / {_count(p['trainable'])}",
            f"{o['tokens_per_example']:.0f} / {p['tokens_per_example']:.0f}",
            f"{o['peak_memory_mb']:.0f} / {p['peak_memory_mb']:.0f}",
            f"{o['eval_examples_per_second']:.0f} / {p['eval_examples_per_second']:.0f}",
            f"{100 * o['eval_accuracy']:.1f} / {100 * p['eval_accuracy']:.1f}",
            f"{o['flops_per_step'] / 1e9:.0f}",
            f"{100 * achieved / peaks[precision]:.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"
