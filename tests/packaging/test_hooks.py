"""`make hooks` and the git pre-commit hook it installs (.ci/pre-commit, CONTRIBUTING.md),
in a git repository of their own: never in this checkout, whose hooks every worktree shares."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.snippets import REPO

HOOK = REPO / ".ci" / "pre-commit"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A new git repository with the checkout's Makefile and hook script."""
    subprocess.run(["git", "init", "--quiet", str(tmp_path)], check=True)
    (tmp_path / ".ci").mkdir()
    shutil.copy2(HOOK, tmp_path / ".ci" / "pre-commit")
    shutil.copy2(REPO / "Makefile", tmp_path / "Makefile")
    return tmp_path


def run(repo: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(list(argv), cwd=repo, env=env, capture_output=True, text=True, timeout=60)


def test_make_hooks_installs_the_hook_again_and_again_but_never_over_another(repo: Path) -> None:
    installed = repo / ".git" / "hooks" / "pre-commit"
    for _ in range(2):
        done = run(repo, "make", "hooks")
        assert done.returncode == 0, done.stdout + done.stderr
        assert installed.read_bytes() == HOOK.read_bytes()
        assert os.access(installed, os.X_OK)

    installed.write_text("#!/bin/sh\nexec their-own-linter\n")
    refused = run(repo, "make", "hooks")
    assert refused.returncode != 0
    assert "another hook: left as it is" in refused.stderr
    assert installed.read_text() == "#!/bin/sh\nexec their-own-linter\n"


def test_the_hook_without_a_venv_says_what_to_do(repo: Path) -> None:
    done = run(repo, str(repo / ".ci" / "pre-commit"))
    assert done.returncode == 1
    assert "run `make venv` there first" in done.stderr


def test_the_hook_fails_on_what_ruff_finds(repo: Path) -> None:
    (repo / ".venv").symlink_to(REPO / ".venv")
    (repo / "module.py").write_text("import os\n")
    done = run(repo, str(repo / ".ci" / "pre-commit"))
    assert done.returncode == 1
    assert "F401" in done.stdout, done.stdout + done.stderr
