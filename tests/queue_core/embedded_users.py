"""Other local users for the embedded cluster's tests: run commands as them.

The tests create a user with useradd (kept on the machine, like any system
user) and run skiplock as that user. The checkout may sit where that user
cannot read (a clone inside root's 0700 home directory): then the interpreter's
libraries and skiplock itself are copied to a directory the user can read.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What `python -m skiplock` imports, beyond the standard library.
_LIBRARIES = ("sqlalchemy", "psycopg2", "alembic", "mako", "markupsafe", "click", "dotenv",
              "setproctitle", "prometheus_client", "tzdata", "typing_extensions", "greenlet")


def ensure_user(name: str) -> pwd.struct_passwd:
    """A system user `name` with no login and no home directory (created if missing)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as other local users")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def as_user(user: pwd.struct_passwd, argv: list[str], env: dict[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/", "LANG": "C.UTF-8"}
    return subprocess.run(argv, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          env={**base, **(env or {})}, cwd="/", text=True, capture_output=True,
                          timeout=timeout)


def _runs(user: pwd.struct_passwd, argv: list[str]) -> bool:
    try:
        return as_user(user, argv, timeout=30).returncode == 0
    except OSError:  # the interpreter itself is out of the user's reach
        return False


class Runtime:
    """`python -m skiplock` as some user: the venv's own if they can read it, else a copy."""

    def __init__(self) -> None:
        self.copy: Path | None = None

    def command(self, user: pwd.struct_passwd) -> tuple[list[str], dict[str, str]]:
        if _runs(user, [sys.executable, "-c", "import skiplock.cli"]):
            return [sys.executable, "-m", "skiplock"], {}
        python = self.interpreter(user)
        if self.copy is None:
            self.copy = Path(tempfile.mkdtemp(prefix="skiplock-runtime-"))
            self.copy.chmod(0o755)
            for name in _LIBRARIES:
                spec = importlib.util.find_spec(name)
                if spec is None or spec.origin is None:
                    continue
                origin = Path(spec.origin)
                source = origin.parent if origin.name == "__init__.py" else origin
                target = self.copy / source.name
                if source.is_dir():
                    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(source, target)
            for extra in Path(importlib.util.find_spec("psycopg2").origin).parents[1].glob(  # type: ignore[arg-type]
                    "psycopg2_binary.libs"):
                shutil.copytree(extra, self.copy / extra.name)
            shutil.copytree(ROOT / "skiplock", self.copy / "skiplock", symlinks=False,
                            ignore=shutil.ignore_patterns("__pycache__"))
            for path in [self.copy, *self.copy.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return [python, "-s", "-m", "skiplock"], {"PYTHONPATH": str(self.copy)}

    @staticmethod
    def interpreter(user: pwd.struct_passwd) -> str:
        """A Python of our version that `user` may run (ours may live in root's home)."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        for candidate in (os.path.realpath(sys.executable), f"/usr/bin/python{version}",
                          f"/usr/local/bin/python{version}"):
            if _runs(user, [candidate, "-c", f"import sys; assert sys.version[:{len(version)}] "
                                             f"== {version!r}"]):
                return candidate
        pytest.skip(f"no Python {version} that user {user.pw_name} may run")

    def close(self) -> None:
        if self.copy is not None:
            shutil.rmtree(self.copy, ignore_errors=True)
