"""PgBouncer in transaction mode, in front of the test server, for the fault tests.

The seed's service ran behind such a pooler: each transaction may run on a
different server connection, so nothing may rely on session state (no
LISTEN, no session SET, which is why the pool runs `--no-listen` through it
and the statement bounds use SET LOCAL). The Debian package is installed
with apt-get when it is missing; PgBouncer refuses to run as root, so it
drops to `nobody`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support import free_port, wait_for

CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")


def find_or_install() -> str:
    """The pgbouncer binary; installs the Debian package when there is none."""
    found = shutil.which("pgbouncer") or next((p for p in CANDIDATES if os.path.exists(p)), None)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "pgbouncer"], check=False, env=env,
                   capture_output=True, timeout=300)
    found = shutil.which("pgbouncer") or next((p for p in CANDIDATES if os.path.exists(p)), None)
    if not found:
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True,
                       timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-q", "pgbouncer"], check=True, env=env,
                       capture_output=True, timeout=300)
        found = shutil.which("pgbouncer") or next(p for p in CANDIDATES if os.path.exists(p))
    return found


class PgBouncer:
    def __init__(self, server_url: str) -> None:
        server = make_url(server_url)
        self.user = server.username or "postgres"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="skiplock-pgbouncer-", dir="/tmp"))
        self.dir.chmod(0o777)
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""[databases]
* = host={server.host or '127.0.0.1'} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 40
ignore_startup_parameters = extra_float_digits
logfile = {self.dir}/pgbouncer.log
""")
        for path in self.dir.iterdir():
            path.chmod(0o666)
        argv = [find_or_install(), str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            argv[1:1] = ["-u", "nobody"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for(lambda: "listening on" in self.log(), 10, "pgbouncer to listen")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "pgbouncer.log").read_text(errors="replace")
        return ""

    def url(self, database_url: str) -> str:
        """`database_url` through this pooler."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port).render_as_string(
            hide_password=False)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(server_url: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(server_url)
    try:
        yield bouncer
    finally:
        bouncer.stop()
