"""`prompttune report DIR...`: the command line of prompttune.reporting (aggregate runs into tables and files)."""

import argparse
import sys
from pathlib import Path

from prompttune.errors import UserError
from prompttune.reporting.reading import PLOTTABLE_METRICS
from prompttune.reporting.report import report
from prompttune.reporting.significance import TESTS


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="prompttune report",
        description="Aggregate the metrics.json files below sweep or run dirs (mean ± std over seeds).",
    )
    parser.add_argument("dirs", nargs="*", type=Path, help="sweep dir(s) or run dir(s), searched recursively")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write report.{md,csv,json,png} (default: the single given dir, else the current dir)",
    )
    parser.add_argument(
        "--metric",
        choices=("auto", *PLOTTABLE_METRICS),
        default="auto",
        help="test metric to rank, test and plot by (auto: macro-F1 where the test set is imbalanced, else accuracy)",
    )
    parser.add_argument(
        "--test",
        choices=TESTS,
        default="auto",
        help="paired test over seeds (auto: paired t-test below 5 common seeds, Wilcoxon signed-rank from 5)",
    )
    parser.add_argument(
        "--select",
        choices=("dev",),
        default=None,
        help="dev: per method and seed, keep only the setting with the best dev accuracy (a -m grid), as LM-BFF",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_request:  # --help, or argparse's own usage error (already printed)
        return exit_request.code if isinstance(exit_request.code, int) else 2
    try:
        written = report(args.dirs, args.out, args.metric, args.test, args.select)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(path.name for path in written)} to {written[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
