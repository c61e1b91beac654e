"""skiplock as an application installs it: a wheel in a fresh virtualenv, outside the checkout.

The wheel is built from this checkout, installed into a new virtualenv in a
temporary directory, and used from an application's own folder: migrate,
enqueue, and a worker that runs the application's handlers until the job
completes. The application deliberately has a top-level module named
`handlers` (a common name) beside its package `myapp`: neither may meet
skiplock's own modules, and site-packages must hold nothing of ours but
`skiplock/`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiplock.queue_core.database.scratch import scratch_database
from tests.packaging.snippets import (
    ENQUEUE_SNIPPETS,
    SIGNUP_TABLE,
    commands,
    readme_url,
    snippet,
    unit_commands,
)
from tests.queue_core.helpers import sql
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]
OTHER_PYTHONS = ("3.12", "3.13")

# An application module named like a skiplock package once was.
APP_HANDLERS = '''
from skiplock import JobResult, handler


@handler("RESIZE_IMAGE")
def resize(payload, job_id):
    return JobResult(success=True, data={"width": payload["width"] // 2})
'''


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
         "-q", "-w", str(out)], cwd=out, env=dict(os.environ))
    [built] = out.glob("skiplock-*.whl")
    return built


def app_dir(base: Path) -> Path:
    app = base / "app"
    (app / "myapp").mkdir(parents=True)
    (app / "myapp" / "__init__.py").write_text("")
    (app / "myapp" / "jobs.py").write_text(snippet("handlers"))
    (app / "handlers.py").write_text(APP_HANDLERS)
    return app


def virtualenv(python: str, base: Path) -> Path:
    """A new virtualenv of `python`, without a pip of its own: seeding one costs seconds,
    and this checkout's pip installs into it (`pip --python`) just the same."""
    venv = base / "venv"
    run([python, "-m", "venv", "--without-pip", str(venv)], cwd=base, env=dict(os.environ))
    return venv


def install(venv: Path, wheel: Path, where: Path) -> None:
    """The README's install snippet, run in the new virtualenv (the wheel is built once)."""
    (where / "dist").mkdir(exist_ok=True)
    shutil.copy(wheel, where / "dist")
    for command in commands("install"):
        words = shlex.split(command)
        if words[:2] == ["pip", "wheel"]:
            assert "/path/to/skiplock" in words  # built by the `wheel` fixture, from this checkout
            continue
        if words[0] == "pip":
            words = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                     "install", "-q", *[str(p) for w in words[2:] for p in sorted(where.glob(w))]]
            run(words, cwd=where, env=dict(os.environ))


def clean_env(database_url: str) -> dict[str, str]:
    """No trace of the checkout: no PYTHONPATH, no VIRTUAL_ENV, the application's own cwd."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SKIPLOCK_HANDLERS", "SKIPLOCK_HOME")}
    env["DATABASE_URL"] = database_url
    return env


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty database (not migrated): the installed skiplock must migrate it itself."""
    with scratch_database("skiplock_wheel", migrated=False) as url:
        yield url


def service_command(setting: str, venv: Path) -> list[str]:
    """A command of the README's systemd snippet, pointed at this virtualenv."""
    unit = unit_commands("systemd")
    return [w.replace("/srv/myapp/.venv", str(venv)) for w in shlex.split(unit[setting])]


def work_through(venv: Path, app: Path, env: dict[str, str], enqueued: list[tuple[str, str]],
                 modules: list[str]) -> list[dict[str, object]]:
    """As the README's unit does: migrate, then a worker; it runs the jobs enqueued (type,
    payload), each by a command of its own, to the end."""
    skiplock = str(venv / "bin" / "skiplock")
    run(service_command("ExecStartPre", venv), cwd=app, env=env)
    for command in commands("install")[2:]:  # the migrate commands of the install snippet
        run([skiplock, *shlex.split(command)[1:]], cwd=app, env=env)
    flags = [arg for m in modules for arg in ("--handlers", m)]
    job_ids = [run([skiplock, "enqueue", job_type, payload, "--handlers", "myapp.jobs", *flags],
                   cwd=app, env=env).strip() for job_type, payload in enqueued]
    log = open(app / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker_command = service_command("ExecStart", venv)
    assert worker_command[1:] == ["worker", "--handlers", "myapp.jobs"]
    worker = subprocess.Popen([*worker_command, "--concurrency", "1", *flags], cwd=app,
                              env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        def finished() -> object:
            assert worker.poll() is None, (app / "worker.log").read_text()
            rows = [sql('SELECT status::text, result FROM "WorkerJob" WHERE id = :id', id=job_id)
                    for job_id in job_ids]
            return all(row and row[0][0] == "COMPLETED" for row in rows) and rows
        done = wait_for(finished, 60, f"jobs {job_ids} to complete")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (app / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()
    return [{"status": status, "result": result} for [(status, result)] in done]


def site_packages(venv: Path) -> Path:
    [found] = venv.glob("lib/python3.*/site-packages")
    return found


def test_a_wheel_installed_outside_the_checkout_migrates_and_runs_the_applications_handlers(
        wheel: Path, tmp_path: Path, fresh_database: str) -> None:
    venv = virtualenv(sys.executable, tmp_path)
    app = app_dir(tmp_path)
    install(venv, wheel, app)
    env = clean_env(fresh_database)

    installed = site_packages(venv)
    for ours in ("handlers", "pool", "queue_core", "migrations"):
        assert not (installed / ours).exists(), f"site-packages has a top-level {ours}/"
    assert (installed / "skiplock" / "migrations" / "versions").is_dir()
    assert (installed / "skiplock" / "migrations" / "script.py.mako").is_file()
    record = next(installed.glob("skiplock-*.dist-info")) / "RECORD"
    paths = [line.split(",", 1)[0] for line in record.read_text().splitlines()]
    strays = [p for p in paths if not p.startswith(("skiplock/", "skiplock-", "../../../bin/"))]
    assert strays == [], f"the wheel installs files outside skiplock/: {strays}"

    # The application's own `handlers` module is found, not anything of skiplock's.
    resized, sent = work_through(venv, app, env, [("RESIZE_IMAGE", '{"width": 640}'),
                                                  ("SEND_EMAIL", '{"to": "ada@example.com"}')],
                                 ["handlers"])
    assert resized["result"] == {"width": 320}
    assert sent["result"] == {"sent_to": "ada@example.com"}

    # The schema teams apply themselves is the one `migrate` made.
    ddl = run([str(venv / "bin" / "skiplock"), "migrate", "--sql"], cwd=app, env=env)
    assert 'CREATE TABLE "WorkerJob"' in ddl and "skiplock_version" in ddl


def other_python(version: str) -> str | None:
    """An interpreter of that version: on PATH, or installed by pyenv but not selected."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}"),
                  *sorted(map(str, pyenv_root.glob(f"versions/{version}.*/bin/python{version}")))]
    for found in filter(None, candidates):
        probe = subprocess.run([found, "-c", "import venv"], capture_output=True, text=True)
        if probe.returncode == 0:
            return found
    return None


@pytest.mark.parametrize("version", OTHER_PYTHONS)
def test_the_wheel_runs_a_job_on_other_pythons(wheel: Path, tmp_path: Path, fresh_database: str,
                                               version: str) -> None:
    python = other_python(version)
    if python is None:  # this machine has no such Python: nothing to try it on
        pytest.skip(f"no python{version} on this machine")
    venv = virtualenv(python, tmp_path)
    app = app_dir(tmp_path)
    install(venv, wheel, app)
    [row] = work_through(venv, app, clean_env(fresh_database), [("SEND_EMAIL", '{"to": "x@y.z"}')],
                         [])
    assert row["status"] == "COMPLETED"


# The README's enqueue snippets, run as written in a process of the virtualenv: the
# snippet's free name DATABASE_URL is given from the environment, and what it made
# is printed for the test to check.
SNIPPET_RUNNER = """
import os, sys
DATABASE_URL = os.environ["DATABASE_URL"]
exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"))
import sqlalchemy
driver = engine.dialect.driver if "engine" in dir() else "-"
print(sqlalchemy.__version__, driver, job_id)
"""


def test_the_readme_snippets_run_as_written_under_sqlalchemy_2_0(
        wheel: Path, tmp_path: Path, database_url: str) -> None:
    """SQLAlchemy 2.0 reads postgresql:// as psycopg2's URL (2.1, in-process, as
    psycopg 3's): the snippets must run on both. The virtualenv gets no pip of its
    own; this one installs into it, from its cache once the other tests filled it."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path,
        env=dict(os.environ))
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", str(wheel),
         "SQLAlchemy>=2.0,<2.1"], cwd=tmp_path, env=dict(os.environ))
    runner = tmp_path / "run_snippet.py"
    runner.write_text(SNIPPET_RUNNER)
    sql(SIGNUP_TABLE)
    try:
        url = readme_url(database_url)
        assert url.startswith("postgresql://")
        for name in ENQUEUE_SNIPPETS:
            path = tmp_path / f"{name}.py"
            path.write_text(snippet(name))
            version, driver, job_id = run([python, str(runner), str(path)], cwd=tmp_path,
                                          env=clean_env(url)).split()
            assert version.startswith("2.0."), version
            if name == "enqueue-session":
                assert driver == "psycopg2"  # what 2.0 makes of postgresql://
            [(key, payload)] = sql('SELECT "idempotencyKey", payload FROM "WorkerJob" '
                                   "WHERE id = :id", id=job_id)
            [(email,)] = sql("SELECT email FROM signup WHERE id = :id",
                             id=key.removeprefix("welcome:"))
            assert payload == {"to": email}
        assert len(sql("SELECT id FROM signup")) == len(ENQUEUE_SNIPPETS)
        # SQLAlchemy 2.0 on psycopg 3, named: what 2.1 makes of postgresql://.
        sql("DELETE FROM signup")
        psycopg3_url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        _, driver, job_id = run([python, str(runner), str(tmp_path / "enqueue-session.py")],
                                cwd=tmp_path, env=clean_env(psycopg3_url)).split()
        assert driver == "psycopg"
        # The key exists from the run above: the existing job comes back, the row is new.
        assert sql('SELECT "idempotencyKey" FROM "WorkerJob" WHERE id = :id',
                   id=job_id) == [("welcome:u42",)]
        assert sql("SELECT id FROM signup") == [("u42",)]
    finally:
        sql("DROP TABLE signup")
