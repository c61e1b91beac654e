"""Draw `python -m bench bloat`'s CSV (run by the bench-only virtualenv, which has
matplotlib): python plot_bloat.py SAMPLES.csv OUT.png TITLE"""

from __future__ import annotations

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str, title: str) -> None:
    with open(source) as handle:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    minutes = [r["seconds"] / 60 for r in rows]
    fig, (sizes, tuples) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    sizes.plot(minutes, [r["heap_bytes"] / 2**20 for r in rows], label="table (heap)")
    sizes.plot(minutes, [r["index_bytes"] / 2**20 for r in rows], label="indexes")
    sizes.set_ylabel("MiB")
    sizes.set_ylim(bottom=0)
    sizes.legend(loc="upper left")
    sizes.set_title(f'"WorkerJob" under churn: {title}')
    tuples.plot(minutes, [r["dead_rows"] for r in rows], label="dead rows")
    tuples.plot(minutes, [r["live_rows"] for r in rows], label="live rows")
    tuples.plot(minutes, [r["pending"] for r in rows], label="pending jobs")
    tuples.set_ylabel("rows")
    tuples.set_ylim(bottom=0)
    tuples.set_xlabel("minutes")
    tuples.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(target, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:4])
