"""``python -m benchmarks <suite> [options]``: run one benchmark suite
(``python -m benchmarks <suite> --help`` lists its options)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

SUITES = {
    "freshness": "benchmarks.freshness",
    "spine": "benchmarks.spine",
    "quality": "benchmarks.quality",
    "served": "benchmarks.served",
    "speed": "benchmarks.speed",
}


def main(argv: list[str]) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m benchmarks", add_help=False)
    parser.add_argument("suite", choices=[*sorted(SUITES), "readme"])
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args, rest = parser.parse_known_args(argv)
    if args.suite == "readme":
        from benchmarks.harness import render_readme

        render_readme()
        return 0
    from benchmarks.harness import BenchmarkFailed

    module = importlib.import_module(SUITES[args.suite])
    try:
        return int(module.main(rest))
    except BenchmarkFailed as exc:
        print(f"error: {exc}; no results were written", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
