"""`python -m bench NAME [options]`: run one benchmark, or all of them with no NAME."""

from __future__ import annotations

import importlib
import sys

# name -> module whose run(argv) prints its figures
BENCHMARKS = {
    "chaos": "bench.chaos",
    "soak": "bench.soak",
    "claim": "bench.claim",
    "pool": "bench.pool",
    "peers": "bench.peers",
    "pickup": "bench.pickup",
    "cpu": "bench.cpu",
    "burst": "bench.burst",
    "profile": "bench.profile",
    "memory": "bench.memory",
    "bloat": "bench.bloat",
    "enqueue": "bench.enqueue",
    "dashboard": "bench.dashboard",
    "drivers": "bench.drivers",
    "workflow": "bench.workflow",
    "flow": "bench.flow",
    "history": "bench.history",
    "cleanup": "bench.cleanup",
}


def main(argv: list[str]) -> None:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS))
        return
    if argv and argv[0] in BENCHMARKS:
        importlib.import_module(BENCHMARKS[argv[0]]).run(argv[1:])
        return
    if argv:
        raise SystemExit(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHMARKS)}")
    for name, module in BENCHMARKS.items():
        # Run by name: chaos and soak are soaks, not speed figures; profile is a diagnosis;
        # bloat takes ten minutes; peers needs the bench-only virtualenv; pickup,
        # cpu and burst check out an earlier commit (a git worktree); history runs a pool
        # nine times; cleanup fills millions of rows twice.
        if name in ("chaos", "soak", "peers", "profile", "bloat", "pickup", "cpu", "burst",
                    "history", "cleanup"):
            continue
        print(f"\n=== {name} ===")
        importlib.import_module(module).run([])


if __name__ == "__main__":
    main(sys.argv[1:])
