"""The README's first steps, run as written from the checkout beside a running worker (the
`make worker` of the first terminal): `make demo`, the first enqueue and its result, stats, ps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.packaging.snippets import commands

REPO = Path(__file__).resolve().parents[2]


def test_the_readmes_first_steps_run_as_written(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIPLOCK_")}
    env.update(DATABASE_URL=database_url, SKIPLOCK_HOME=str(tmp_path))
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "skiplock", "worker"], cwd=REPO, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ran = [subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300) for command in commands("first-steps")]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
    for command, done in zip(commands("first-steps"), ran, strict=True):
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    demo, enqueue, stats, ps = ran
    assert "GENERATE_TOMORROW_PLAN" in demo.stdout and "dead letters" not in demo.stdout
    # The demo user's November, reviewed by the worker (entries in it while the demo's three
    # weeks up to yesterday reach into November; "No entries" after that).
    review = json.loads(enqueue.stdout)
    assert review["reviewId"] and review["headline"], review
    assert "PENDING" in stats.stdout or "pending" in stats.stdout
    assert "master" in ps.stdout, ps.stdout
    assert "Traceback" not in log.read_text(), log.read_text()
