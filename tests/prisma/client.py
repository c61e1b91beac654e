"""The real Prisma Client 7 (npm: prisma, @prisma/client, @prisma/adapter-pg, pg), for the tests.

Installed once into tests/prisma/node_modules with `npm ci` from the committed lock file, on
the machine's Node. `prisma generate` reads a schema and writes a client without the schema
engine, whose binary cannot be downloaded here: PRISMA_SCHEMA_ENGINE_BINARY points at any
executable to keep the CLI from fetching it. If npm cannot install the packages, the tests
fail with one line that says so: they are never skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

HERE = Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
STAMP = MODULES / ".skiplock-installed"
GENERATED = HERE / ".generated"  # under HERE, so that the clients find node_modules
SEED_SCHEMA = (HERE / "seed" / "schema.prisma").read_text()

GENERATOR = """generator client {{
  provider        = "prisma-client"
  output          = "./client"{preview}
}}

datasource db {{
  provider = "postgresql"
}}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PRISMA_SCHEMA_ENGINE_BINARY": shutil.which("true") or "/bin/true",
            "CHECKPOINT_DISABLE": "1", "PRISMA_HIDE_UPDATE_MESSAGE": "1", "NO_COLOR": "1"}


def install() -> None:
    """`npm ci` unless node_modules already holds what the lock file says."""
    wanted = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the Prisma tests need Node.js and npm (the real Prisma client): npm not found",
                    pytrace=False)
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HERE,
                          capture_output=True, text=True, timeout=600, env=_env())
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.fail(f"npm could not install Prisma 7 from the npm registry for the Prisma tests "
                    f"(npm ci in {HERE}: {last[0]})", pytrace=False)
    STAMP.write_text(wanted)


class Client:
    """A client generated from one schema, and the database it talks to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def run(self, database_url: str, calls: list[dict[str, Any]]) -> list[Any]:
        """The results of the calls (`{"model", "op", "args"}`), in order."""
        url = make_url(database_url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        done = subprocess.run([str(MODULES / ".bin" / "tsx"), str(HERE / "run.ts"),
                               json.dumps(calls)], cwd=HERE, capture_output=True, text=True,
                              timeout=120, env={**_env(), "CLIENT": str(self.folder / "client"),
                                                "DATABASE_URL": url})
        assert done.returncode == 0, f"the Prisma client failed:\n{done.stderr[-3000:]}"
        results: list[Any] = json.loads(done.stdout)
        return results


def generate(schema: str, *, preview: tuple[str, ...] = ()) -> Client:
    """`prisma generate` for `schema` (models and enums; the generator block is added)."""
    folder = GENERATED / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    features = ", ".join(f'"{f}"' for f in preview)
    header = GENERATOR.format(preview=f"\n  previewFeatures = [{features}]" if preview else "")
    (folder / "schema.prisma").write_text(header + "\n" + schema)
    (folder / "prisma.config.ts").write_text(
        'import { defineConfig } from "prisma/config";\n'
        'export default defineConfig({ schema: "schema.prisma" });\n')
    done = subprocess.run([str(MODULES / ".bin" / "prisma"), "generate"], cwd=folder,
                          capture_output=True, text=True, timeout=180, env=_env())
    assert done.returncode == 0, f"prisma generate failed:\n{done.stdout}\n{done.stderr}"
    return Client(folder)


def models_of(schema: str) -> str:
    """A schema without its generator and datasource blocks."""
    blocks = schema.split("\n\n")
    return "\n\n".join(b for b in blocks if not b.lstrip().startswith(("generator", "datasource")))
