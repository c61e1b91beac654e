"""The embedded default is one cluster per user, found from every directory, and
only `worker`, `migrate`, `demo` and `db start` may create or start it.

Every test runs the real command line with a fresh HOME (no DATABASE_URL, no
SKIPLOCK_HOME), so the per-user default lands in a temporary directory; as root
its data directory goes to /var/lib/skiplock/<digest>, which is removed after.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skiplock.queue_core.config import default_home
from skiplock.queue_core.database.embedded import SHARED_ROOT, EmbeddedCluster, find_bindir
from skiplock.queue_core.errors import EmbeddedDatabaseError
from tests.support import wait_for

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL server binaries")]

REPO = Path(__file__).resolve().parents[2]
NOT_RUNNING = re.compile(r"^skiplock: error: no database configured: DATABASE_URL is unset and "
                         r"the embedded cluster in (\S+) is not running; start it with "
                         r"`skiplock db start`.*set DATABASE_URL")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _remove(home: Path) -> None:
    """Stop a cluster a test made and remove what lies outside its temporary directory."""
    cluster = EmbeddedCluster(home)
    with contextlib.suppress(EmbeddedDatabaseError):
        cluster.stop()
    socket_dir = None
    with contextlib.suppress(EmbeddedDatabaseError):
        socket_dir = cluster.socket_dir
    if SHARED_ROOT in cluster.data_dir.parents:
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
    if socket_dir is not None and socket_dir != cluster.data_dir and \
            Path("/tmp") in socket_dir.parents:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def base() -> Iterator[Path]:
    """A fresh directory (0700, as mkdtemp makes it: as root, like /root itself)."""
    path = Path(tempfile.mkdtemp(prefix="skiplock-default-"))
    yield path
    for lock in path.rglob("embedded.lock"):
        _remove(lock.parent)
    shutil.rmtree(path, ignore_errors=True)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SKIPLOCK_") and k not in ("DATABASE_URL", "TEST_DATABASE_URL",
                                                           "XDG_DATA_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def _cli(home: Path) -> Cli:
    def run(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "skiplock", *args], env=_env(home),
                              cwd=cwd, text=True, capture_output=True, timeout=timeout)
    return run


def _per_user_home(home: Path) -> Path:
    return home / ".local" / "share" / "skiplock"


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _processes_naming(*paths: Path) -> list[str]:
    """Command lines in the process table that name any of `paths` (a postmaster's -D)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(str(path) in cmdline for path in paths):
            found.append(cmdline)
    return found


def _postmaster_of(data_dir: Path) -> list[str]:
    return [line for line in _processes_naming(data_dir) if "postgres" in line]


def test_the_default_home_is_per_user_and_xdg_wins(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_home() == tmp_path / ".local" / "share" / "skiplock"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_home() == tmp_path / "data" / "skiplock"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # ignored, as the XDG specification says
    assert default_home() == tmp_path / ".local" / "share" / "skiplock"


@pytest.mark.skipif(os.geteuid() != 0, reason="the case of root")
def test_root_never_makes_its_home_in_another_users_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import pwd

    theirs = tmp_path / "alice"
    theirs.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
    monkeypatch.setenv("HOME", str(theirs))  # as `sudo -E` leaves it
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_home() == Path(pwd.getpwuid(0).pw_dir).resolve() / ".local/share/skiplock"


def test_commands_that_do_not_start_it_create_nothing_and_say_what_to_do(base: Path) -> None:
    home, stray = base / "home", base / "stray"
    home.mkdir()
    stray.mkdir()
    cli = _cli(home)
    where = EmbeddedCluster(_per_user_home(home)).data_dir
    job_id = "0" * 32
    commands = [
        ["stats"], ["jobs"], ["job", job_id], ["enqueue", "X", "{}", "--any-type"],
        ["wait", job_id, "--timeout", "1"], ["cancel", job_id], ["retry", "--all-dead"],
        ["recover"], ["cleanup"], ["ps"], ["pause", "X"], ["resume", "X"],
        ["backfill", "interpret"], ["db", "url"], ["migrate", "--check"],
        ["dashboard", "--port", "0"],
    ]
    for argv in commands:
        ran = cli(*argv, cwd=stray, timeout=60)
        lines = ran.stderr.splitlines()
        assert ran.returncode == 1, (argv, ran.stdout, ran.stderr)
        assert len(lines) == 1 and NOT_RUNNING.match(lines[0]), (argv, ran.stderr)
        assert NOT_RUNNING.match(lines[0]).group(1) == str(where)  # type: ignore[union-attr]
        assert ran.stdout == "", argv
    # The Python API follows the same rule: an application's enqueue never runs initdb.
    api = subprocess.run([sys.executable, "-c", (
        "import skiplock\n"
        "from skiplock.queue_core.errors import DatabaseUnavailable\n"
        "try:\n    skiplock.enqueue('X', {})\n"
        "except DatabaseUnavailable as exc:\n    print(type(exc).__name__, exc)")],
        env=_env(home), cwd=stray, text=True, capture_output=True, timeout=60)
    assert api.stdout.startswith("EmbeddedNotRunning no database configured"), api.stderr
    assert _tree(home) == [] and _tree(stray) == [], "nothing may be created"
    assert not os.path.lexists(where)
    assert _processes_naming(home, where) == []
    status = cli("db", "status", cwd=stray)
    assert status.returncode == 1
    assert f"embedded cluster in {where}: not created yet" in status.stdout
    assert _tree(home) == [] and _tree(stray) == []


def test_migrate_check_in_a_stray_directory_changes_nothing(base: Path) -> None:
    home, stray = base / "home", base / "stray"
    (stray / "notes").mkdir(parents=True)
    (stray / "notes" / "todo.txt").write_text("mine")
    (home / ".local" / "share").mkdir(parents=True)  # an ordinary home, with no skiplock yet
    before_home, before_stray = _tree(home), _tree(stray)
    checked = _cli(home)("migrate", "--check", cwd=stray)
    assert checked.returncode == 1 and NOT_RUNNING.match(checked.stderr), checked.stderr
    assert _tree(home) == before_home and _tree(stray) == before_stray
    assert not (stray / ".skiplock").exists()
    where = EmbeddedCluster(_per_user_home(home)).data_dir
    assert not os.path.lexists(where) and _processes_naming(home, where) == []


def _worker_runs(cli: Cli, home: Path, cwd: Path, job_id: str) -> str:
    """Start `skiplock worker`, wait until it took the job, stop it with TERM; its stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--concurrency", "1",
                             "--no-listen"], env=_env(home), cwd=cwd, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        def taken() -> bool:
            shown = cli("job", job_id, cwd=cwd).stdout
            return bool(re.search(r"^status +(COMPLETED|DEAD_LETTER)", shown, re.M))

        wait_for(lambda: proc.poll() is not None or taken(), 90, "the worker to take the job",
                 interval=0.3)
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    return stderr


def test_the_same_cluster_from_every_directory_and_the_starting_commands_say_so(
        base: Path) -> None:
    home, first, second = base / "home", base / "project-a", base / "elsewhere" / "b"
    for path in (home, first, second):
        path.mkdir(parents=True)
    cli = _cli(home)
    cluster = EmbeddedCluster(_per_user_home(home))

    migrated = cli("migrate", "--demo", cwd=first)  # as `make worker` does in a checkout
    assert migrated.returncode == 0, migrated.stderr
    said = [line for line in migrated.stderr.splitlines() if "embedded cluster" in line]
    assert said == [f"skiplock: created and started the embedded cluster in {cluster.data_dir}: "
                    f"PostgreSQL {cluster.version}, socket {cluster.socket_dir}; stop it with "
                    "`skiplock db stop`"], migrated.stderr
    assert _tree(first) == [] and _tree(second) == [], "no cluster in the current directory"

    again = cli("migrate", cwd=second)  # already running: not a word about starting
    assert again.returncode == 0 and "started" not in again.stderr, again.stderr
    urls = {cli("db", "url", cwd=cwd).stdout for cwd in (first, second, base)}
    assert len(urls) == 1 and str(cluster.socket_dir).replace("/", "%2F") in urls.pop()
    # A type the worker below serves; the event does not exist, so it ends at its first run.
    enqueued = cli("enqueue", "INTERPRET_EVENT", '{"eventId": "evt_missing"}', cwd=second)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    shown = cli("job", job_id, cwd=first)
    assert shown.returncode == 0 and job_id in shown.stdout

    status = cli("db", "status", cwd=second)
    assert status.returncode == 0
    assert status.stdout.splitlines()[:4] == [
        f"embedded cluster in {cluster.data_dir}: running",
        f"home (default SKIPLOCK_HOME): {_per_user_home(home)}",
        f"socket directory: {cluster.socket_dir}",
        f"log: {cluster.log_file}",
    ]
    if os.geteuid() == 0:  # root's home is 0700: the cluster's owner cannot enter it
        assert cluster.data_dir == cluster.shared_data_dir
    else:
        assert cluster.data_dir == _per_user_home(home) / "pgdata"

    # Stopped, the worker starts it again (`make worker`) and names it in one line.
    assert cli("db", "stop", cwd=first).returncode == 0
    assert _postmaster_of(cluster.data_dir) == []
    stderr = _worker_runs(cli, home, second, job_id)
    started = [line for line in stderr.splitlines() if "embedded cluster" in line]
    assert started == [f"skiplock: started the embedded cluster in {cluster.data_dir}: "
                       f"PostgreSQL {cluster.version}, socket {cluster.socket_dir}; stop it "
                       "with `skiplock db stop`"], stderr
    assert _tree(first) == [] and _tree(second) == []
    assert cli("db", "stop", cwd=base).returncode == 0
    assert cli("db", "status", cwd=base).returncode == 1


def _earlier_cluster(checkout: Path) -> tuple[EmbeddedCluster, str]:
    """What an earlier skiplock left: a running cluster in ./.skiplock holding one job."""
    env = _env(checkout / "unused-home")
    env["SKIPLOCK_HOME"] = str(checkout / ".skiplock")
    for argv in (["migrate"], ["enqueue", "X", '{"kept": true}', "--any-type"]):
        ran = subprocess.run([sys.executable, "-m", "skiplock", *argv], env=env, cwd=checkout,
                             text=True, capture_output=True, timeout=90)
        assert ran.returncode == 0, ran.stderr
    earlier = EmbeddedCluster(checkout / ".skiplock")
    assert earlier.is_running()
    return earlier, ran.stdout.strip()


@pytest.mark.parametrize("reachable", [True, False], ids=["in-the-checkout", "root-0700"])
def test_an_earlier_checkouts_cluster_moves_to_the_per_user_home_with_its_data(
        base: Path, reachable: bool) -> None:
    # Reachable: the cluster's owner may enter both (the layout of every user but root:
    # checkout/.skiplock/pgdata). Not, as root: both under /var/lib/skiplock/<digest>.
    if reachable:
        base.chmod(0o755)
    home, checkout = base / "home", base / "checkout"
    home.mkdir()
    checkout.mkdir()
    earlier, job_id = _earlier_cluster(checkout)
    source = earlier.data_dir
    local = reachable or os.geteuid() != 0
    assert source == (checkout / ".skiplock" / "pgdata" if local else earlier.shared_data_dir)
    cli = _cli(home)
    cluster = EmbeddedCluster(_per_user_home(home))

    # A command that does not start clusters points at the way, and touches nothing.
    stats = cli("stats", cwd=checkout)
    assert stats.returncode == 1 and f"moves the cluster of an earlier skiplock in {source}" \
        in stats.stderr, stats.stderr
    status = cli("db", "status", cwd=checkout)
    assert f"an earlier skiplock's cluster is in {source} (running)" in status.stdout
    assert earlier.is_running() and not os.path.lexists(_per_user_home(home))

    moved = cli("db", "start", cwd=checkout)
    assert moved.returncode == 0, moved.stderr
    assert moved.stderr.splitlines() == [
        f"skiplock: moved the embedded cluster of an earlier skiplock from {source} to "
        f"{cluster.data_dir} (its data kept, {checkout / '.skiplock'} left in place) and "
        f"started it: PostgreSQL {cluster.version}, socket {cluster.socket_dir}; stop it with "
        "`skiplock db stop`"]
    assert cluster.data_dir == (_per_user_home(home) / "pgdata" if local else
                                cluster.shared_data_dir)
    assert not os.path.lexists(source) and (checkout / ".skiplock" / "embedded.lock").exists()
    assert _postmaster_of(source) == [] and len(_postmaster_of(cluster.data_dir)) == 1
    # Its data came along, and every directory finds it now.
    shown = cli("job", job_id, "--json", cwd=base)
    assert shown.returncode == 0 and '"kept": true' in shown.stdout, shown.stderr
    assert cli("db", "start", cwd=checkout).stderr.startswith("the embedded cluster already runs")
    assert cli("db", "stop", cwd=base).returncode == 0


def test_an_earlier_cluster_on_another_filesystem_is_left_running_where_it_is(
        base: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(base).st_dev:
        pytest.fail("this test needs /dev/shm on a filesystem of its own (a tmpfs)")
    checkout = Path(tempfile.mkdtemp(prefix="skiplock-checkout-", dir=other))
    try:
        checkout.chmod(0o755)
        base.chmod(0o755)
        home = base / "home"
        home.mkdir()
        earlier, job_id = _earlier_cluster(checkout)
        source = earlier.data_dir
        postmaster = (source / "postmaster.pid").read_text()
        refused = _cli(home)("migrate", cwd=checkout)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.splitlines() == [
            f"skiplock: error: the embedded cluster of an earlier skiplock is in {source}, on "
            f"another filesystem than {_per_user_home(home)}; keep using it with "
            f"SKIPLOCK_HOME={checkout / '.skiplock'}, or stop it (`SKIPLOCK_HOME="
            f"{checkout / '.skiplock'} skiplock db stop`) and move that directory to "
            f"{_per_user_home(home) / 'pgdata'} yourself"]
        # Refused before anything was stopped: the same postmaster runs on the same data.
        assert earlier.is_running() and (source / "postmaster.pid").read_text() == postmaster
        shown = subprocess.run([sys.executable, "-m", "skiplock", "job", job_id], text=True,
                               env={**_env(home), "SKIPLOCK_HOME": str(checkout / ".skiplock")},
                               capture_output=True, timeout=60)
        assert shown.returncode == 0 and job_id in shown.stdout, shown.stderr
        assert not (_per_user_home(home) / "pgdata").exists()
    finally:
        _remove(checkout / ".skiplock")
        shutil.rmtree(checkout, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs another user's directory")
def test_a_skiplock_directory_another_user_planted_is_never_looked_at(base: Path) -> None:
    import pwd

    base.chmod(0o755)
    home, shared = base / "home", base / "shared"
    home.mkdir()
    shared.mkdir(mode=0o777)
    planted = shared / ".skiplock" / "pgdata"
    planted.mkdir(parents=True)
    (planted / "PG_VERSION").write_text("16\n")
    nobody = pwd.getpwnam("nobody")
    for path in (shared / ".skiplock", planted, planted / "PG_VERSION"):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    before = {str(p): (os.lstat(p).st_uid, os.lstat(p).st_mtime_ns)
              for p in [shared, *shared.rglob("*")]}
    cli = _cli(home)
    status = cli("db", "status", cwd=shared)
    assert "earlier" not in status.stdout
    started = cli("db", "start", cwd=shared)
    assert started.returncode == 0, started.stderr
    assert "created and started the embedded cluster" in started.stderr
    assert "moved" not in started.stderr and "not used" not in started.stderr
    assert EmbeddedCluster(_per_user_home(home)).is_running()
    assert {str(p): (os.lstat(p).st_uid, os.lstat(p).st_mtime_ns)
            for p in [shared, *shared.rglob("*")]} == before
    assert cli("db", "stop", cwd=base).returncode == 0
