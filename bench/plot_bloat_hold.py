"""Draw `python -m bench bloat --hold-xmin`'s CSV (run by the bench-only virtualenv,
which has matplotlib): python plot_bloat_hold.py SAMPLES.csv OUT.png HELD_S TITLE"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"without": {"linestyle": "--", "alpha": 0.8}, "held": {"linestyle": "-"}}
SMOOTH_S = 5  # throughput over this many seconds of samples


def main(source: str, target: str, held: str, title: str) -> None:
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    with open(source) as handle:
        for row in csv.DictReader(handle):
            runs[row.pop("run")].append({k: float(v) if v else float("nan")
                                         for k, v in row.items()})
    fig, (rate, claim, sizes, dead) = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for name, rows in runs.items():
        style = STYLE.get(name, {})
        label = "transaction held" if name == "held" else "without it"
        minutes = [r["seconds"] / 60 for r in rows]
        speed = [(b["completed"] - a["completed"]) / (b["seconds"] - a["seconds"])
                 for a, b in zip(rows, rows[SMOOTH_S:], strict=False)]
        rate.plot(minutes[SMOOTH_S:], speed, label=label, **style)
        sampled = [r for r in rows if r["claim_ms"] == r["claim_ms"]]
        at = [r["seconds"] / 60 for r in sampled]
        claim.plot(at, [r["claim_ms"] for r in sampled], label=f"from the head, {label}",
                   color="tab:blue", **style)
        claim.plot(at, [r["cursor_claim_ms"] for r in sampled],
                   label=f"from a cursor, {label}", color="tab:green", **style)
        sizes.plot(minutes, [r["heap_bytes"] / 2**20 for r in rows],
                   label=f"heap, {label}", color="tab:blue", **style)
        sizes.plot(minutes, [r["index_bytes"] / 2**20 for r in rows],
                   label=f"indexes, {label}", color="tab:orange", **style)
        sizes.plot(minutes, [r["claim_index_bytes"] / 2**20 for r in rows],
                   label=f"claim index, {label}", color="tab:green", **style)
        dead.plot(minutes, [r["dead_rows"] for r in rows], label=f"dead rows, {label}",
                  color="tab:red", **style)
        dead.plot(minutes, [r["backlog"] for r in rows], label=f"backlog (jobs), {label}",
                  color="tab:purple", **style)
    rate.set_ylabel(f"jobs/s ({SMOOTH_S} s)")
    rate.set_title(f"Churn with a REPEATABLE READ transaction held: {title}")
    claim.set_ylabel("claim ms (server)")
    claim.set_yscale("log")
    sizes.set_ylabel("hot table MiB")
    dead.set_ylabel("rows")
    dead.set_xlabel("minutes")
    for axes in (rate, claim, sizes, dead):
        axes.axvline(float(held) / 60, color="grey", linewidth=1)
        axes.legend(loc="upper left", fontsize="small")
        if axes is not claim:
            axes.set_ylim(bottom=0)
    rate.annotate("transaction ends", (float(held) / 60, 0), xytext=(4, 4),
                  textcoords="offset points", fontsize="small")
    fig.tight_layout()
    fig.savefig(target, dpi=100)


if __name__ == "__main__":
    main(*sys.argv[1:5])
