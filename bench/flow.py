"""Flow control: what each kind of limit costs when it does not bind, what the claim
costs with many limited keys, and how fair a heavy key is to a light one.

    python -m bench flow [--only NAME ...] [--jobs 20000]

Each case is a module `bench/flow_NAME.py` with `run_case(url, args)` that prints its
figures; every case measures its own unlimited run beside the limited one, on the
same scratch database in the same run, so the ratio is never across runs.
"""

from __future__ import annotations

import argparse
import importlib

from bench.common import machine, scratch_database

# name -> module; each has run_case(url: str, args: argparse.Namespace) -> None
CASES: dict[str, str] = {
    "debounce": "bench.flow_debounce",
    "sequences": "bench.flow_sequences",
    "fairness": "bench.flow_fairness",
    "rates": "bench.flow_rates",
}


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench flow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), default=None,
                        help="run only these cases (default: all)")
    parser.add_argument("--jobs", type=int, default=20_000,
                        help="no-op jobs per throughput measurement (default 20000)")
    args = parser.parse_args(argv)
    with scratch_database() as url:
        print(machine(url))
        for name in args.only or list(CASES):
            print(f"\n--- {name} ---")
            importlib.import_module(CASES[name]).run_case(url, args)
