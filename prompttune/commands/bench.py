"""`prompttune bench`: the command line of prompttune.benchmarks (also each cell's own process, `--cell`)."""

import argparse
import json
import sys
import time

from prompttune.benchmarks import peft_peers
from prompttune.benchmarks.peft_peers import METHODS, matmul_peak, ours, peer, run_cell, table


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prompttune bench", description=peft_peers.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--model", default="smollm2_135m")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step (median)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-examples", type=int, default=96)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="this tool's side with trainer.compile=true")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--cell", nargs=3, metavar=("SIDE", "METHOD", "PRECISION"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from prompttune.runs.jobs import quiet_libraries

    quiet_libraries()
    if args.cell:
        side, method, precision = args.cell
        print(json.dumps((ours if side == "ours" else peer)(method, precision, args)))
        return 0
    try:
        import peft  # noqa: F401
    except ImportError:
        print("error: the benchmark needs peft: pip install -r requirements/bench.txt (or make bench)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    print(", ".join(f"{p} matmul peak {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()), flush=True)
    results = {}
    for method in args.methods:
        for precision in args.precisions:
            cell = {side: run_cell(side, method, precision, args) for side in ("ours", "peer")}
            results[(method, precision)] = cell
            print(method, precision, json.dumps(cell), flush=True)
    print()
    print(table(results, peaks, args.precisions))
    print(
        f"\n{len(results) * 2} cells in {time.perf_counter() - started:.0f} s; batch {args.batch_size}, "
        f"{args.steps} timed steps after a warm-up (median), {args.eval_examples} test examples"
        + ("; this tool's side compiled (trainer.compile=true)" if args.compile else "")
    )
    if args.json:
        rows = [{"method": m, "precision": p, **cell} for (m, p), cell in results.items()]
        with open(args.json, "w") as out:
            json.dump({"matmul_peak_flops": peaks, "cells": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
