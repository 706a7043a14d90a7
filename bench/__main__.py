"""Dispatch ``python -m bench NAME [options]`` to ``bench/NAME.py``'s ``main(argv)``."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("kvp", "vss", "fcopy", "rss")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        names = "|".join(BENCHMARKS)
        print(f"usage: python -m bench {{{names}}} [--reference] [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}")
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
