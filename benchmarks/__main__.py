"""``python -m benchmarks <suite> [options]``: run one benchmark suite."""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = {
    "spine": "benchmarks.spine",
    "quality": "benchmarks.quality",
    "speed": "benchmarks.speed",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("suite", choices=[*sorted(SUITES), "readme"])
    args, rest = parser.parse_known_args(argv)
    if args.suite == "readme":
        from benchmarks.harness import render_readme

        render_readme()
        return 0
    module = importlib.import_module(SUITES[args.suite])
    return int(module.main(rest))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
