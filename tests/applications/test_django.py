"""skiplock.django in a real Django project (tests/applications/django_shop), on both drivers.

The project is copied to a temporary directory, with the README's `django-enqueue`
snippet as its shop/orders.py, and run as a Django project is: the README's
`django-worker` commands (`manage.py migrate`, `manage.py skiplock_worker`), its
own management command for the shop's code, `manage.py test`; each a process of
its own, with no DATABASE_URL: skiplock finds its database in DATABASES. Django
4.2+ runs on psycopg 3 when it can import it; the psycopg2 project hides it (its
settings.py says how).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.scratch import run_admin, server_url
from skiplock.queue_core.database.urls import libpq_dsn, normalize
from tests.packaging.snippets import commands, snippet
from tests.pool.conftest import in_group, workers_of
from tests.support import wait_for

pytestmark = pytest.mark.slow  # a Django project's processes: seconds each

SHOP = Path(__file__).resolve().parent / "django_shop"
# The project's PASSWORD when the test server needs none (it never asks for it): the
# worker's log must not show it all the same.
NOT_ASKED_FOR = "s3cret-of-the-shop"
DRIVERS = ("psycopg", "psycopg2")
# The README's commands, as the test runs them: `python manage.py ARGS...`.
MIGRATE, WORKER = ([word for word in command.split() if word not in ("python", "manage.py")]
                   for command in commands("django-worker"))


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    url: str  # the project's database, for the test's own reading
    migrated: str = ""  # what the fixture's `manage.py migrate` printed

    def manage(self, *args: str, check: bool = True, **env: str
               ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=self.root,
                              env={**self.env, **env}, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            pytest.fail(f"manage.py {' '.join(args)} exited {done.returncode}:\n"
                        f"{done.stdout}{done.stderr}")
        return done

    def scenario(self, name: str) -> dict[str, Any]:
        email = f"{uuid.uuid4().hex}@example.com"
        found: dict[str, Any] = json.loads(self.manage("scenario", name, email).stdout)
        return {**found, "email": email}

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg2.connect(libpq_dsn(self.url)) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows

    def job(self, job_id: str) -> tuple[Any, ...] | None:
        rows = self.query('SELECT status::text, payload, attempts, "lastError" FROM "WorkerJob" '
                          "WHERE id = %s", job_id)
        return rows[0] if rows else None

    def order(self, order_id: int) -> tuple[Any, ...] | None:
        rows = self.query("SELECT email, shipped, shipped_by FROM shop_order WHERE id = %s", order_id)
        return rows[0] if rows else None


def project_env(url: str, driver: str) -> dict[str, str]:
    """The environment of the project's processes: its database in SHOP_DB_*, no DATABASE_URL."""
    parsed = make_url(url)
    query = {key: value if isinstance(value, str) else value[-1] for key, value in parsed.query.items()}
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "TEST_DATABASE_URL", "DJANGO_SETTINGS_MODULE")
           and not key.startswith(("SKIPLOCK_", "SHOP_"))}
    env.update(SHOP_DRIVER=driver, SHOP_DB_NAME=parsed.database or "",
               SHOP_DB_USER=parsed.username or "",
               SHOP_DB_PASSWORD=parsed.password or NOT_ASKED_FOR,
               SHOP_DB_HOST=parsed.host or query.get("host", ""),
               SHOP_DB_PORT=str(parsed.port or query.get("port", "")),
               PYTHONDONTWRITEBYTECODE="1")
    return env


@contextlib.contextmanager
def new_project(driver: str, root: Path, before: str | None = None) -> Iterator[Project]:
    """The shop in `root`, on a new database of its own (dropped after); with `before`,
    `skiplock migrate` brought that database to this revision first."""
    admin = server_url()
    name = f"skiplock_django_{uuid.uuid4().hex[:10]}"
    run_admin(admin, f'CREATE DATABASE "{name}"')
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    shutil.copytree(SHOP, root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "shop" / "orders.py").write_text(snippet("django-enqueue"))
    try:
        if before is not None:
            migrate.upgrade(normalize(url), before)
        yield Project(root, project_env(url, driver), url)
    finally:
        for database in (name, f"test_{name}"):  # the second, if `manage.py test` left it
            run_admin(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE datname = '{database}' AND pid <> pg_backend_pid()")
            run_admin(admin, f'DROP DATABASE IF EXISTS "{database}"')


@pytest.fixture(scope="module", params=DRIVERS)
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Project]:
    """The shop, in a new database of its own, after the README's `manage.py migrate`."""
    with new_project(request.param, tmp_path_factory.mktemp(f"shop-{request.param}")) as shop:
        shop.migrated = shop.manage(*MIGRATE).stdout
        yield shop


def test_the_project_runs_on_the_driver_it_is_given(project: Project) -> None:
    assert project.scenario("driver")["driver"] == project.env["SHOP_DRIVER"]


def test_manage_py_migrate_installs_the_queue_and_records_it_in_both_tables(
        project: Project) -> None:
    assert "Applying skiplock.0001_queue... OK" in project.migrated
    tables = {name for (name,) in project.query(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert set(migrate.QUEUE_TABLES) <= tables
    assert project.query("SELECT version_num FROM skiplock_version") == [(migrate.queue_head(),)]
    assert ("skiplock", "0001_queue") in project.query("SELECT app, name FROM django_migrations")
    again = project.manage("migrate").stdout
    assert "No migrations to apply." in again


@pytest.mark.parametrize("before", ["0005_features", "skiplock@head"])
def test_migrate_takes_a_queue_that_skiplock_migrate_began_or_finished_to_the_head(
        tmp_path: Path, before: str) -> None:
    with new_project("psycopg", tmp_path, before=before) as shop:
        said = shop.manage(*MIGRATE).stdout
        assert "Applying skiplock.0001_queue... OK" in said
        assert shop.query("SELECT version_num FROM skiplock_version") == [(migrate.queue_head(),)]
        # Reversed, the queue and its jobs stay; forward again, nothing to do.
        job = shop.scenario("commit")["job"]
        assert "Unapplying skiplock.0001_queue... OK" in shop.manage("migrate", "skiplock",
                                                                      "zero").stdout
        assert shop.job(job) is not None
        assert shop.query("SELECT version_num FROM skiplock_version") == [(migrate.queue_head(),)]
        assert "Applying skiplock.0001_queue... OK" in shop.manage(*MIGRATE).stdout
        assert shop.job(job) is not None


@pytest.mark.parametrize("scenario", ["rollback", "outer-rollback"])
def test_a_rollback_of_atomic_leaves_neither_the_order_nor_its_job(project: Project,
                                                                   scenario: str) -> None:
    done = project.scenario(scenario)
    assert project.job(done["job"]) is None
    assert project.order(done["order"]) is None
    if scenario == "rollback":  # and what enqueue_many wrote in the block
        assert len(done["more"]) == 1 and project.job(done["more"][0]) is None


def test_a_commit_of_atomic_writes_the_order_and_its_job_together(project: Project) -> None:
    done = project.scenario("commit")
    status, payload, _, _ = project.job(done["job"]) or pytest.fail("no job")
    assert (status, payload) in (("PENDING", {"order": done["order"]}),
                                 ("COMPLETED", {"order": done["order"]}))
    assert project.order(done["order"]) is not None


def test_outside_atomic_the_job_commits_at_once_as_the_orms_writes_do(project: Project) -> None:
    done = project.scenario("autocommit")
    assert project.job(done["job"]) is not None
    assert project.order(done["order"]) is not None


def test_an_inner_atomic_rolled_back_takes_only_its_job(project: Project) -> None:
    done = project.scenario("nested")
    assert project.job(done["job"]) is None
    assert project.order(done["order"]) is not None


def test_the_worker_is_given_each_apps_jobs_module_or_the_settings_list(project: Project) -> None:
    found = project.scenario("handlers")
    assert found["plain"] == ["--handlers=shop.jobs"]  # skiplock.django has none of its own
    assert found["flag"] == ["--handlers=shop.jobs", "--handlers", "shop.more_jobs"]
    env = {"SKIPLOCK_HANDLERS": "shop.env_jobs"}
    found = json.loads(project.manage("scenario", "handlers", "-", **env).stdout)
    assert found["plain"] == ["--handlers=shop.jobs", "--handlers=shop.env_jobs"]
    assert found["flag"] == ["--handlers=shop.jobs", "--handlers", "shop.more_jobs"]  # flag wins
    found = json.loads(project.manage("scenario", "handlers", "-", SHOP_HANDLERS="a.jobs,b.jobs"
                                      ).stdout)
    assert found["plain"] == ["--handlers=a.jobs", "--handlers=b.jobs"]
    refused = project.manage("skiplock_worker", check=False, SHOP_HANDLERS="shop.jobs",
                             SHOP_HANDLERS_AS="text")
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("skiplock: error: the setting SKIPLOCK_HANDLERS must be a "
                                      "list of module names, not 'shop.jobs'")


def test_without_database_url_skiplocks_own_connection_goes_to_django_s_database(
        project: Project) -> None:
    done = project.scenario("own-connection")
    assert project.job(done["job"]) is not None
    assert make_url(done["url"]).database == make_url(project.url).database
    assert "application_name=shop" in done["url"]  # OPTIONS reach skiplock too


def test_the_projects_own_tests_run_on_a_test_database_that_migrate_gave_the_queue(
        project: Project) -> None:
    done = project.manage("test", "shop", "--noinput", "-v", "2", check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Applying skiplock.0001_queue... OK" in said
    assert "Ran 2 tests" in said
    # Dropped at the end: skiplock's own connections to it were closed first.
    test_database = f"test_{make_url(project.url).database}"
    assert project.query("SELECT count(*) FROM pg_database WHERE datname = %s",
                         test_database) == [(0,)]


@contextlib.contextmanager
def worker(project: Project, *flags: str) -> Iterator[subprocess.Popen[str]]:
    log = open(project.root / "worker.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "manage.py", *WORKER, "--concurrency", "1", "--heartbeat", "1",
         "--poll-max", "0.5", *flags],
        cwd=project.root, env=project.env, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not in_group(proc.pid), 5, "the worker's processes to be gone")
        log.close()


def worker_log(project: Project) -> str:
    return (project.root / "worker.log").read_text(errors="replace")


@pytest.mark.pool  # a real pool, under manage.py
def test_skiplock_worker_runs_the_apps_handlers_and_stops_on_term(project: Project) -> None:
    with worker(project) as pool:
        done = project.scenario("commit")
        wait_for(lambda: (project.job(done["job"]) or ("",))[0] == "COMPLETED", 30,
                 f"the job to complete; log:\n{worker_log(project)}")
        email, shipped, shipped_by = project.order(done["order"]) or pytest.fail("no order")
        assert shipped and shipped_by  # the handler wrote through the ORM
        assert "handlers=shop.jobs" in worker_log(project)  # found as the app's jobs module
        assert project.env["SHOP_DB_PASSWORD"] not in worker_log(project)
        assert ":***@" in worker_log(project)  # the URL made of DATABASES, redacted
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0, worker_log(project)


@pytest.mark.pool  # a real pool, under manage.py
def test_a_childs_orm_connection_that_broke_is_replaced_before_the_next_job(
        project: Project) -> None:
    with worker(project) as pool:
        first = project.scenario("commit")
        wait_for(lambda: (project.job(first["job"]) or ("",))[0] == "COMPLETED", 30,
                 f"the first job to complete; log:\n{worker_log(project)}")
        [child] = workers_of(pool.pid)
        broken = (project.order(first["order"]) or pytest.fail("no order"))[2]
        # The child keeps its ORM connection (CONN_MAX_AGE None); the server ends it.
        assert project.query("SELECT pg_terminate_backend(%s)", broken) == [(True,)]
        second = project.scenario("commit")
        wait_for(lambda: (project.job(second["job"]) or ("",))[0] == "COMPLETED", 30,
                 f"the second job to complete; log:\n{worker_log(project)}")
        status, _, attempts, error = project.job(second["job"]) or pytest.fail("no job")
        assert (attempts, error) == (1, None), worker_log(project)
        assert workers_of(pool.pid) == [child]
        shipped_by = (project.order(second["order"]) or pytest.fail("no order"))[2]
        assert shipped_by != broken
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(30) == 0, worker_log(project)


def test_the_worker_takes_skiplock_workers_flags(project: Project) -> None:
    done = project.manage("skiplock_worker", "--help")
    assert "--graceful-timeout" in done.stdout
    assert "manage.py skiplock_worker" in done.stdout
    refused = project.manage("skiplock_worker", "--concurrency", "lots", check=False)
    assert refused.returncode == 2
    assert "'lots'" in refused.stderr


def test_a_database_that_is_not_postgresql_is_refused_in_one_line(project: Project) -> None:
    for args in (["check"], ["skiplock_worker"], ["migrate"]):
        done = project.manage(*args, check=False, SHOP_ENGINE="sqlite")
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "skiplock.E001" in done.stderr
        assert "skiplock needs PostgreSQL: DATABASES['default'] is sqlite" in done.stderr
        assert "Traceback" not in done.stderr
