"""The embedded default: a private PostgreSQL cluster, one per user.

With no DATABASE_URL, skiplock uses this cluster, started from the server
binaries installed on the machine and left running for the next command
(`skiplock db stop` stops it). It listens on a unix socket only
(`listen_addresses = ''`), so it never clashes with a server on a TCP port.
It lives in SKIPLOCK_HOME, by default the user's own data directory
(`$XDG_DATA_HOME/skiplock`, else `~/.local/share/skiplock`; config.default_home),
so every command finds the same cluster from any directory.

Starting it is an explicit permission (`start()`), given only by the commands
that need a database to exist (`worker`, `migrate`, `demo`, `db start`); they
say in one line on stderr when they started it. Everything else, the Python API
included, uses it only if it already runs (`running_url()`) and otherwise fails
with one line saying so: a command run in a stray directory must not initdb.

It is private to the user who started it (see docs/security.md):
- the socket lives in a directory of mode 0700 owned by the cluster's owner:
  the data directory itself, or, when that path is too long for a socket,
  a directory of a random name that skiplock made (one it did not make, or a
  symlink, is never used);
- authentication is `peer`, mapped so that only the owner and root may
  connect (as the superuser `postgres`); no password exists to leak;
- nothing is deleted, and nothing outside the data directory changes owner.

PostgreSQL refuses to run as root: when we are root, the cluster belongs to and
runs as an unprivileged user (`postgres` if it exists, else `nobody`, or
SKIPLOCK_EMBEDDED_USER). The data directory is `SKIPLOCK_HOME/pgdata` when
that user can reach it; when it cannot (root's own 0700 home directory, say),
the data directory goes to /var/lib/skiplock/<digest of SKIPLOCK_HOME>, and
`skiplock db status` says where.

Earlier versions kept the cluster in `./.skiplock` of the directory a command
ran in. A starting command run where such a cluster is, with the default
SKIPLOCK_HOME that has no cluster yet, moves it there (stopped, renamed on the
same filesystem, started again: never copied, nothing deleted) and says so.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from skiplock.queue_core.config import Settings
from skiplock.queue_core.errors import EmbeddedDatabaseError, EmbeddedNotRunning

DATABASE_NAME = "skiplock"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file: the cluster has no TCP listener
# Where root puts a cluster that its unprivileged owner could not reach under SKIPLOCK_HOME.
SHARED_ROOT = Path("/var/lib/skiplock")
# sun_path holds 107 bytes, and "/.s.PGSQL.5432.lock" must fit after the directory.
_SOCKET_DIR_LIMIT = 107 - len("/.s.PGSQL.5432.lock")
_CONFIG_FILE = "skiplock.conf"
_SOCKET_RECORD = "skiplock.socket_dir"
# Where earlier versions kept the cluster: relative to the current directory.
EARLIER_HOME = ".skiplock"
_INCLUDE = f"include_if_exists = '{_CONFIG_FILE}'  # skiplock: the settings of the embedded cluster"
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


def conf_quote(value: str) -> str:
    """`value` as a quoted string of postgresql.conf (a path may hold ' or \\)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise EmbeddedDatabaseError(
            f"the path {value!r} holds a control character; choose another SKIPLOCK_HOME"
        )
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _ident_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_private_dir(path: Path, uid: int) -> bool:
    """A real directory (not a symlink) owned by `uid` that no one else may enter."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077


class EmbeddedCluster:
    """One private cluster for `home` (SKIPLOCK_HOME)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).resolve()
        self._lock_file = self.home / "embedded.lock"
        self._data_dir: Path | None = None

    # -- where ---------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            self._data_dir = self._locate()
        return self._data_dir

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def shared_data_dir(self) -> Path:
        """Where root puts the cluster when its owner cannot reach SKIPLOCK_HOME."""
        return SHARED_ROOT / hashlib.sha256(str(self.home).encode()).hexdigest()[:16]

    @property
    def socket_dir(self) -> Path:
        if len(str(self.data_dir)) <= _SOCKET_DIR_LIMIT:
            return self.data_dir
        try:
            return Path((self.data_dir / _SOCKET_RECORD).read_text().strip())
        except OSError:
            raise EmbeddedDatabaseError(
                f"the embedded cluster in {self.data_dir} has not been started"
            ) from None

    @property
    def version(self) -> str:
        """The cluster's PostgreSQL major version, as initdb wrote it."""
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            return "?"

    @property
    def url(self) -> str:
        from sqlalchemy.engine import URL

        return URL.create("postgresql+psycopg2", username=SUPERUSER, database=DATABASE_NAME,
                          query={"host": str(self.socket_dir), "port": str(PORT)}
                          ).render_as_string(hide_password=False)

    def _locate(self) -> Path:
        local = self.home / "pgdata"
        if os.geteuid() != 0:
            return local
        shared = self.shared_data_dir
        for candidate in (local, shared):
            if os.path.lexists(candidate / "PG_VERSION"):
                return candidate
        # A home not made yet is judged by the directory it will be made in (db status
        # says where a cluster would go before any command made one).
        probe = self.home
        while not probe.is_dir() and probe != probe.parent:
            probe = probe.parent
        if self._owner_can_enter(probe):
            return local
        return shared

    def _owner_can_enter(self, path: Path) -> bool:
        # The kernel's own answer, asked as the owner: every directory on the way counts.
        test = shutil.which("test") or "/usr/bin/test"
        return subprocess.run([test, "-x", str(path)], cwd="/", **self._as_owner()).returncode == 0

    # -- life ----------------------------------------------------------------

    def ensure_running(self, announce: Callable[[str], None] | None = None,
                       earlier: EmbeddedCluster | None = None) -> str:
        """Initialise and start the cluster if needed; return its URL.

        `announce` gets one line when this call started (or restarted) it;
        nothing when it already ran. `earlier`: a cluster of an earlier
        skiplock to move here if this home has none yet.
        """
        bindir = find_bindir()
        if bindir is None:
            raise EmbeddedDatabaseError(_NO_BINARIES)
        done = ""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            with self._locked():
                moved = None
                if earlier is not None and not self._has_cluster() and earlier._has_cluster():
                    moved = self._move_from(earlier)
                created = not self._has_cluster()
                if created:
                    self._initdb(bindir)
                running = self._running(bindir)
                changed = self._configure(running)
                if not running:
                    self._pg_ctl(bindir, "start", "start the embedded cluster")
                    done = f"started the embedded cluster in {self.data_dir}"
                    if created:
                        done = f"created and started the embedded cluster in {self.data_dir}"
                    elif moved and earlier is not None:
                        done = (f"moved the embedded cluster of an earlier skiplock from {moved} "
                                f"to {self.data_dir} (its data kept, {earlier.home} left in "
                                "place) and started it")
                elif changed:  # a cluster of an older skiplock: take the private settings now
                    self._pg_ctl(bindir, "restart", "restart the embedded cluster")
                    done = f"restarted the embedded cluster in {self.data_dir} (new settings)"
                self._create_database()
        except OSError as exc:  # a directory we may not write, say: one line, not a traceback
            where = f" ({exc.filename})" if exc.filename else ""
            raise EmbeddedDatabaseError(
                f"cannot prepare the embedded cluster in {self.home}: {exc.strerror}{where}; "
                "set SKIPLOCK_HOME to a directory you own, or DATABASE_URL") from None
        if done and announce is not None:
            unused = ""
            if earlier is not None and not moved and earlier._has_cluster():
                unused = (f" ({earlier.data_dir}, an earlier skiplock's cluster, is not used; "
                          f"SKIPLOCK_HOME={earlier.home} would use it)")
            announce(f"{done}: PostgreSQL {self.version}, socket {self.socket_dir}; stop it with "
                     f"`skiplock db stop`{unused}")
        return self.url

    def running_url(self) -> str:
        """The URL if the cluster runs; never initialises, starts or creates anything."""
        if not self.is_running():
            raise EmbeddedNotRunning(
                f"no database configured: DATABASE_URL is unset and the embedded cluster in "
                f"{self.data_dir} is not running; start it with `skiplock db start` (or "
                "`make worker` in a checkout), or set DATABASE_URL")
        return self.url

    def stop(self) -> bool:
        """Stop the cluster; False if it was not running."""
        bindir = find_bindir()
        if bindir is None or not self.home.is_dir() or not self._has_cluster():
            return False
        with self._locked():
            if not self._running(bindir):
                return False
            self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                       "stop"], "stop the embedded cluster")
        return True

    def is_running(self) -> bool:
        """Whether the cluster's postmaster is alive, read from its pid file.

        What `pg_ctl status` checks, without a process: every command that does
        not start the cluster asks this first, and needs no server binaries.
        """
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return False
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: a stale pid file's number, reused
            return False
        return True

    def has_cluster(self) -> bool:
        """Whether initdb ran here (the data directory holds PG_VERSION)."""
        return self._has_cluster()

    def _has_cluster(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _move_from(self, earlier: EmbeddedCluster) -> Path:
        """Move `earlier`'s data directory to ours: stopped, renamed, never copied.

        Only a real directory holding a cluster is taken (earlier_cluster: under
        a `.skiplock` that this user made); a move that cannot be a rename
        (another filesystem) is refused before anything is stopped. Returns
        where it was.
        """
        source, target = earlier.data_dir, self.data_dir
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            raise EmbeddedDatabaseError(
                f"{source} looks like an earlier skiplock's cluster but is not a directory (a "
                f"symlink?); skiplock leaves it alone: set SKIPLOCK_HOME={earlier.home} to use "
                "it, or move it away")
        if target == self.shared_data_dir:
            self._make_shared_root()
        if os.stat(source).st_dev != os.stat(target.parent).st_dev:
            raise EmbeddedDatabaseError(
                f"the embedded cluster of an earlier skiplock is in {source}, on another "
                f"filesystem than {target.parent}; keep using it with "
                f"SKIPLOCK_HOME={earlier.home}, or stop it (`SKIPLOCK_HOME={earlier.home} "
                f"skiplock db stop`) and move that directory to {target} yourself")
        with suppress(FileNotFoundError):
            if os.listdir(target):
                raise EmbeddedDatabaseError(
                    f"cannot move the earlier cluster in {source} to {target}: {target} is not "
                    "empty; skiplock deletes nothing: move one of them away, or set "
                    "SKIPLOCK_HOME")
        earlier.stop()
        os.rename(source, target)  # an empty directory at `target` is replaced, nothing else
        return source

    # -- steps ---------------------------------------------------------------

    def _initdb(self, bindir: Path) -> None:
        self._owner_name()  # fails with one clear line for a user without a name
        self._make_data_dir()
        self._run([str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                   "--auth-local=peer", "--auth-host=reject", "-E", "UTF8", "--locale=C"],
                  "initialise the embedded cluster")

    def _make_data_dir(self) -> None:
        """An empty data directory of mode 0700 that belongs to the cluster's owner.

        Only a directory that skiplock just made, or an empty one already owned
        by the owner, is used; anything else is refused and left as it is.
        """
        path = self.data_dir
        if path == self.shared_data_dir:
            self._make_shared_root()
        uid, gid = self._owner_ids()
        with suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if os.listdir(fd):
                raise EmbeddedDatabaseError(
                    f"{path} exists, is not empty and holds no PostgreSQL cluster (no PG_VERSION); "
                    "skiplock deletes nothing it did not make: move it away, or choose another "
                    "SKIPLOCK_HOME"
                )
            if st.st_uid != uid:
                if st.st_uid != os.geteuid():
                    raise EmbeddedDatabaseError(
                        f"{path} belongs to another user (uid {st.st_uid}); skiplock will not use it"
                    )
                os.fchown(fd, uid, gid)  # the data directory itself, made by us, empty
            os.fchmod(fd, 0o700)
        except OSError as exc:
            raise EmbeddedDatabaseError(f"cannot prepare {path}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _make_shared_root(self) -> None:
        try:
            SHARED_ROOT.mkdir(mode=0o755, exist_ok=True)
        except OSError as exc:
            raise EmbeddedDatabaseError(f"cannot create {SHARED_ROOT}: {exc.strerror}") from None
        st = os.lstat(SHARED_ROOT)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise EmbeddedDatabaseError(
                f"{SHARED_ROOT} must be a directory that only root can write to; "
                "skiplock will not put a cluster there"
            )

    def _configure(self, running: bool) -> bool:
        """Write the cluster's private settings; True if something changed."""
        owner = self._owner_name()
        socket_dir = self._socket_dir_for_start(running)
        users = [owner] + (["root"] if owner != "root" else [])
        files = {
            "pg_hba.conf": (
                "# skiplock embedded cluster: only its owner (and root) may connect, over the\n"
                "# unix socket, as the superuser (see pg_ident.conf); nothing on TCP.\n"
                "local all all peer map=skiplock\n"
            ),
            "pg_ident.conf": "# MAPNAME SYSTEM-USERNAME PG-USERNAME\n" + "".join(
                f"skiplock {_ident_quote(user)} {SUPERUSER}\n" for user in users),
            _CONFIG_FILE: (
                "# skiplock embedded cluster: unix socket only, private to its owner\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = {conf_quote(str(socket_dir))}\n"
                "unix_socket_permissions = 0700\n"
                f"port = {PORT}\n"
                "max_connections = 200\n"
                "timezone = 'UTC'\n"
            ),
        }
        if socket_dir != self.data_dir:
            files[_SOCKET_RECORD] = f"{socket_dir}\n"
        changed = False
        for name, content in files.items():
            changed |= self._write(self.data_dir / name, content)
        conf = self.data_dir / "postgresql.conf"
        if _INCLUDE not in conf.read_text():
            with open(conf, "a") as handle:  # the file initdb made: it keeps its owner
                handle.write(f"\n{_INCLUDE}\n")
            changed = True
        return changed

    def _socket_dir_for_start(self, running: bool) -> Path:
        """The data directory when its path fits a socket, else a private directory in /tmp."""
        if len(str(self.data_dir)) <= _SOCKET_DIR_LIMIT:
            return self.data_dir
        uid, _ = self._owner_ids()
        record = self.data_dir / _SOCKET_RECORD
        if record.exists():
            recorded = Path(record.read_text().strip())
            if is_private_dir(recorded, uid):
                return recorded
        if running:
            raise EmbeddedDatabaseError(
                f"the embedded cluster in {self.data_dir} runs, but its socket directory is not "
                "private any more; stop it with `skiplock db stop` (as its owner or root)"
            )
        for _ in range(10):
            candidate = Path("/tmp") / f"skiplock-{secrets.token_hex(8)}"
            # Made by the owner itself: mkdir fails on anything already there (a
            # directory or symlink someone planted), and we try another name.
            made = subprocess.run(["mkdir", "-m", "700", str(candidate)], cwd="/",
                                  capture_output=True, **self._as_owner())
            if made.returncode == 0 and is_private_dir(candidate, uid):
                return candidate
        raise EmbeddedDatabaseError("could not make a private socket directory in /tmp")

    def _write(self, path: Path, content: str) -> bool:
        """Write a file of the data directory, owned by the cluster's owner; True if changed."""
        try:
            if path.read_text() == content:
                return False
        except FileNotFoundError:
            pass
        uid, gid = self._owner_ids()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(fd).st_uid != uid:
                os.fchown(fd, uid, gid)  # a file inside the data directory
            os.write(fd, content.encode())
        finally:
            os.close(fd)
        return True

    def _pg_ctl(self, bindir: Path, action: str, what: str) -> None:
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                   "-m", "fast", "-w", "-t", "60", action], what)

    def _running(self, bindir: Path) -> bool:
        result = subprocess.run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), "status"],
                                capture_output=True, text=True, cwd="/", **self._as_owner())
        return result.returncode == 0

    def _create_database(self) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(host=str(self.socket_dir), port=PORT, user=SUPERUSER,
                                    dbname="postgres", connect_timeout=10)
        except psycopg2.Error as exc:
            reason = (str(exc).strip().splitlines() or ["no reason given"])[0]
            raise EmbeddedDatabaseError(
                f"the embedded cluster runs but refuses us: {reason} (log: {self.log_file})"
            ) from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            conn.close()

    # -- whose cluster -----------------------------------------------------------

    def _owner(self) -> pwd.struct_passwd | None:
        """The unprivileged user the cluster runs as when we are root; None otherwise."""
        if os.geteuid() != 0:
            return None
        data_dir = self._data_dir
        if data_dir is not None:
            try:
                uid = os.lstat(data_dir).st_uid
                if uid != 0:
                    return pwd.getpwuid(uid)  # a cluster that exists keeps its owner
            except (FileNotFoundError, KeyError):
                pass
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

    def _owner_ids(self) -> tuple[int, int]:
        owner = self._owner()
        if owner is None:
            return os.geteuid(), os.getegid()
        return owner.pw_uid, owner.pw_gid

    def _owner_name(self) -> str:
        owner = self._owner()
        if owner is not None:
            return owner.pw_name
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            raise EmbeddedDatabaseError(
                f"user id {os.geteuid()} has no name (no entry in /etc/passwd), which "
                "PostgreSQL needs; set DATABASE_URL instead"
            ) from None

    def _as_owner(self) -> dict[str, Any]:
        owner = self._owner()
        if owner is None:
            return {}
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": "/"}}

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, cwd="/",
                                **self._as_owner())
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            tail = detail[-1] if detail else f"exit status {result.returncode}"
            raise EmbeddedDatabaseError(f"could not {what}: {tail} (log: {self.log_file})")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Two commands starting at once must not both run initdb or pg_ctl start.
        # O_NOFOLLOW: a symlink planted in SKIPLOCK_HOME must not make us create
        # or open a file elsewhere.
        try:
            fd = os.open(self._lock_file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise EmbeddedDatabaseError(f"cannot open {self._lock_file}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


# -- which cluster, and who may start it -------------------------------------------


def cluster_for(settings: Settings) -> EmbeddedCluster:
    """The embedded cluster of these settings (SKIPLOCK_HOME, else the per-user default)."""
    return EmbeddedCluster(settings.home_path)


def earlier_cluster(settings: Settings) -> EmbeddedCluster | None:
    """The cluster an earlier skiplock made in `./.skiplock`, if there is one.

    Only with the default SKIPLOCK_HOME: a home that is set is used as it is.
    """
    if settings.home:
        return None
    try:
        home = Path.cwd() / EARLIER_HOME
    except FileNotFoundError:  # the current directory was removed
        return None
    # Only a real directory this user made: one that another user planted in a
    # shared directory (/tmp/.skiplock) is none of ours, and is not even looked at.
    try:
        made = os.lstat(home)
    except OSError:
        return None
    if (not stat.S_ISDIR(made.st_mode) or made.st_uid != os.geteuid()
            or home.resolve() == settings.home_path):
        return None
    earlier = EmbeddedCluster(home)
    return earlier if earlier.has_cluster() else None


def say(line: str) -> None:
    """One line on stderr, for people (a started cluster is news to a newcomer)."""
    print(f"skiplock: {line}", file=sys.stderr, flush=True)


def start(settings: Settings, announce: Callable[[str], None] = say) -> str:
    """Start the embedded cluster if needed (moving an earlier one here); its URL.

    The one way to start it: only `worker`, `migrate`, `demo`, `db start` (and
    the test suite's scratch databases) call this.
    """
    return cluster_for(settings).ensure_running(announce, earlier_cluster(settings))


def running_url(settings: Settings) -> str:
    """The embedded cluster's URL if it runs, else EmbeddedNotRunning (one line)."""
    cluster = cluster_for(settings)
    try:
        return cluster.running_url()
    except EmbeddedNotRunning as exc:
        earlier = earlier_cluster(settings)
        if earlier is None or cluster.has_cluster():
            raise
        raise EmbeddedNotRunning(
            f"{exc}; `skiplock db start` here moves the cluster of an earlier skiplock in "
            f"{earlier.data_dir} there") from None
