"""The embedded default: a private PostgreSQL cluster in `.skiplock/pgdata`.

With no DATABASE_URL, every command uses this cluster, started on demand from
the server binaries installed on the machine and left running for the next
command (`skiplock db stop` stops it). It listens on a unix socket only
(`listen_addresses = ''`), so it never clashes with a server on a TCP port.
PostgreSQL refuses to run as root: when we are root, the cluster belongs to
and runs as an unprivileged user (`postgres` if it exists, else `nobody`, or
SKIPLOCK_EMBEDDED_USER).
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skiplock.queue_core.errors import EmbeddedDatabaseError

DATABASE_NAME = "skiplock"
PORT = 5432  # only names the socket file: the cluster has no TCP listener
_SOCKET_PATH_LIMIT = 90  # sun_path holds 107 bytes, and ".s.PGSQL.5432" must fit after it
_NO_BINARIES = (
    "no PostgreSQL server binaries found (looked for pg_ctl and initdb on PATH, in "
    "`pg_config --bindir` and /usr/lib/postgresql/*/bin). Either install the server "
    "(for example `apt-get install postgresql`) so skiplock can start its embedded "
    "cluster, or set DATABASE_URL to a PostgreSQL you already run."
)


def find_bindir() -> Path | None:
    """The directory holding pg_ctl, initdb and postgres, newest version first."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    versioned.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    candidates += [Path(p) for p in versioned]
    candidates += [Path("/usr/local/pgsql/bin")]
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("pg_ctl", "initdb", "postgres")):
            return directory
    return None


class EmbeddedCluster:
    """One private cluster under `home` (normally `.skiplock/`)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).resolve()
        self.data_dir = self.home / "pgdata"
        self.log_file = self.home / "postgres.log"
        self._lock_file = self.home / "embedded.lock"
        socket_dir = self.home / "run"
        if len(str(socket_dir)) > _SOCKET_PATH_LIMIT:
            digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:12]
            socket_dir = Path("/tmp") / f"skiplock-{digest}"
        self.socket_dir = socket_dir

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@/{DATABASE_NAME}?host={self.socket_dir}&port={PORT}"

    def ensure_running(self) -> str:
        """Initialise and start the cluster if needed; return its URL."""
        bindir = find_bindir()
        if bindir is None:
            raise EmbeddedDatabaseError(_NO_BINARIES)
        self.home.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bindir)
            if not self._running(bindir):
                self._start(bindir)
            self._create_database()
        return self.url

    def stop(self) -> bool:
        """Stop the cluster; False if it was not running."""
        bindir = find_bindir()
        if bindir is None or not (self.data_dir / "PG_VERSION").exists():
            return False
        with self._locked():
            if not self._running(bindir):
                return False
            self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                       "stop"], "stop the embedded cluster")
        return True

    def is_running(self) -> bool:
        bindir = find_bindir()
        return bool(bindir and (self.data_dir / "PG_VERSION").exists() and self._running(bindir))

    # -- steps ---------------------------------------------------------------

    def _initdb(self, bindir: Path) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made cluster from an interrupted initdb
        self.data_dir.mkdir(mode=0o700)
        self._hand_over(self.home)
        self._run([str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C"], "initialise the embedded cluster")
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# skiplock embedded cluster: unix socket only, private to this checkout\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                f"port = {PORT}\n"
                "max_connections = 200\n"
                "timezone = 'UTC'\n"
            )

    def _start(self, bindir: Path) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._hand_over(self.socket_dir)
        self._hand_over(self.home, recursive=False)
        if not self.log_file.exists():
            self.log_file.touch()
        self._hand_over(self.log_file, recursive=False)
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                   "-w", "-t", "60", "start"], "start the embedded cluster")

    def _running(self, bindir: Path) -> bool:
        result = subprocess.run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "status"],
                                capture_output=True, text=True, **self._as_owner())
        return result.returncode == 0

    def _create_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket_dir), port=PORT, user="postgres",
                                dbname="postgres", connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            conn.close()

    # -- running as someone else when we are root ------------------------------

    def _owner(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        name = os.environ.get("SKIPLOCK_EMBEDDED_USER")
        for candidate in ([name] if name else ["postgres", "nobody"]):
            try:
                return pwd.getpwnam(candidate)
            except KeyError:
                continue
        raise EmbeddedDatabaseError(
            "running as root, and PostgreSQL refuses root: no unprivileged user to run the "
            "embedded cluster as (set SKIPLOCK_EMBEDDED_USER, or set DATABASE_URL)"
        )

    def _as_owner(self) -> dict[str, Any]:
        owner = self._owner()
        if owner is None:
            return {}
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": str(self.home)}}

    def _hand_over(self, path: Path, recursive: bool = True) -> None:
        owner = self._owner()
        if owner is None:
            return
        self._check_traversable(path, owner)
        targets = [path]
        if recursive and path.is_dir():
            targets += list(path.rglob("*"))
        for target in targets:
            os.chown(target, owner.pw_uid, owner.pw_gid, follow_symlinks=False)

    def _check_traversable(self, path: Path, owner: pwd.struct_passwd) -> None:
        for parent in path.resolve().parents:
            st = parent.stat()
            if st.st_uid != owner.pw_uid and not st.st_mode & 0o001:
                raise EmbeddedDatabaseError(
                    f"the embedded cluster runs as {owner.pw_name!r}, who cannot enter {parent} "
                    f"(mode {oct(st.st_mode & 0o777)}); put it elsewhere with "
                    "SKIPLOCK_HOME=/var/lib/skiplock, or set DATABASE_URL"
                )

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, cwd=str(self.home),
                                **self._as_owner())
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            tail = detail[-1] if detail else f"exit status {result.returncode}"
            raise EmbeddedDatabaseError(f"could not {what}: {tail} (log: {self.log_file})")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Two commands starting at once must not both run initdb or pg_ctl start.
        with open(self._lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
