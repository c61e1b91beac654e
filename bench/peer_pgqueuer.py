"""PgQueuer's side of `python -m bench peers`, run by the bench-only virtualenv.

PgQueuer is never a dependency of skiplock: `make bench-peers` installs it from
PyPI into `.bench-venv`, and the orchestrator (bench/peers.py, in the project's
own environment) runs this script with that environment's Python. Every
command prints one JSON object on stdout.

    python peer_pgqueuer.py install DSN
    python peer_pgqueuer.py worker DSN BATCH          (runs until SIGTERM)
    python peer_pgqueuer.py fill DSN ENTRYPOINT COUNT PAYLOAD_JSON
    python peer_pgqueuer.py burst DSN COUNT PAYLOAD_JSON   (CPU-bound jobs in one call)
    python peer_pgqueuer.py bulk DSN COUNT BATCH      (enqueue rate, many per call)
    python peer_pgqueuer.py single DSN COUNT          (enqueue rate, one per call)
    python peer_pgqueuer.py pickup DSN COUNT GAP_S    (jobs enqueued one by one, t0 inside)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bodies  # noqa: E402  (the shared job bodies, beside this file)


async def _queries(dsn: str) -> tuple[asyncpg.Connection, Queries]:
    conn = await asyncpg.connect(dsn)
    return conn, Queries(AsyncpgDriver(conn))


async def install(dsn: str) -> dict[str, object]:
    conn, queries = await _queries(dsn)
    await queries.install()
    await conn.close()
    return {"installed": True}


async def worker(dsn: str, batch: int) -> dict[str, object]:
    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: object) -> None:
        bodies.noop()

    @pgq.entrypoint("cpu")
    async def cpu(job: object) -> None:
        bodies.burn(json.loads(job.payload)["ms"])  # type: ignore[attr-defined]

    @pgq.entrypoint("pickup")
    async def pickup(job: object) -> None:
        bodies.record_pickup(json.loads(job.payload)["t0"])  # type: ignore[attr-defined]

    await pgq.run(batch_size=batch)
    return {}


async def fill(dsn: str, entrypoint: str, count: int, payload: str) -> dict[str, object]:
    conn, queries = await _queries(dsn)
    body = payload.encode()
    for start in range(0, count, 5000):
        n = min(5000, count - start)
        await queries.enqueue([entrypoint] * n, [body] * n, [0] * n)
    await conn.execute("VACUUM ANALYZE pgqueuer")
    await conn.close()
    return {"filled": count}


async def burst(dsn: str, count: int, payload: str) -> dict[str, object]:
    """`count` CPU-bound jobs in one enqueue call, into a running pool (no VACUUM)."""
    conn, queries = await _queries(dsn)
    await queries.enqueue(["cpu"] * count, [payload.encode()] * count, [0] * count)
    await conn.close()
    return {"enqueued": count}


async def bulk(dsn: str, count: int, batch: int) -> dict[str, object]:
    conn, queries = await _queries(dsn)
    began = time.perf_counter()
    for start in range(0, count, batch):
        n = min(batch, count - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    elapsed = time.perf_counter() - began
    await conn.close()
    return {"rate": count / elapsed}


async def single(dsn: str, count: int) -> dict[str, object]:
    conn, queries = await _queries(dsn)
    began = time.perf_counter()
    for _ in range(count):
        await queries.enqueue("noop", None)
    elapsed = time.perf_counter() - began
    await conn.close()
    return {"rate": count / elapsed}


async def pickup(dsn: str, count: int, gap_s: float) -> dict[str, object]:
    conn, queries = await _queries(dsn)
    for _ in range(count):
        await queries.enqueue("pickup", json.dumps({"t0": time.time()}).encode())
        await asyncio.sleep(gap_s)
    await conn.close()
    return {"enqueued": count}


COMMANDS = {"install": (install, ()), "worker": (worker, (int,)),
            "fill": (fill, (str, int, str)), "burst": (burst, (int, str)),
            "bulk": (bulk, (int, int)),
            "single": (single, (int,)), "pickup": (pickup, (int, float))}


def main(argv: list[str]) -> None:
    name, dsn, *rest = argv
    fn, types = COMMANDS[name]
    args = [cast(value) for cast, value in zip(types, rest, strict=True)]
    print(json.dumps(asyncio.run(fn(dsn, *args))), flush=True)  # type: ignore[operator]


if __name__ == "__main__":
    main(sys.argv[1:])
