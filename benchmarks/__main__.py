"""Run one benchmark: `python -m benchmarks NAME [options]` (NAME: see --help)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHMARKS = {
    "ingest": "benchmarks.ingest",
    "slicing": "benchmarks.slicing",
    "quality": "benchmarks.quality",
    "scoring": "benchmarks.scoring",
    "nightly": "benchmarks.nightly",
    "pii": "benchmarks.pii",
    "pii_compare": "benchmarks.pii_compare",
    "training": "benchmarks.training",
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(BENCHMARKS[args.name])
    result = module.main(rest)
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
