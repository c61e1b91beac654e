# The two commands a newcomer needs: `make worker` and `make test`.
# Each does its own set-up: a virtual environment in .venv with the project
# installed (editable, with its dev tools), the database found or started
# (DATABASE_URL, else the per-user embedded cluster in ~/.local/share/skiplock,
# which `skiplock migrate` starts and names in one line; `skiplock db status`
# says where it is, `skiplock db stop` stops it), migrations. In the checkout,
# the built-in handlers' demo domain is installed too (`migrate --demo`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: worker test test-fast hooks lint bench bench-peers bench-venv chaos soak migrate demo clean chromium dashboard

# pip is quiet, so that its output does not bury what matters; each step says
# what it does instead, since the first install takes about a minute.
$(STAMP): setup.cfg pyproject.toml
	@echo "make: creating the virtual environment in $(VENV) (once)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "make: installing skiplock and its tools into $(VENV) (about a minute the first time)"
	@$(BIN)/python -m pip install --quiet -e '.[dev,dashboard]'
	@touch $@
	@echo "make: installed; the commands are in $(BIN) (.venv/bin/skiplock --help)"

venv: $(STAMP)
	@git rev-parse --git-dir >/dev/null 2>&1 || exit 0; \
	 test -x "$$(git rev-parse --git-path hooks)/pre-commit" || \
	 echo "make: to run ruff and mypy before every commit: make hooks (CONTRIBUTING.md)"

# A git pre-commit hook that runs `make lint`'s linters with the committing
# checkout's .venv (.ci/pre-commit). Git keeps hooks in the repository's common
# directory, so one install serves every worktree, and each needs its .venv. A
# pre-commit hook of another origin is left as it is.
hooks:
	@hooks=$$(git rev-parse --git-path hooks) && mkdir -p "$$hooks" && \
	 if [ -e "$$hooks/pre-commit" ] && ! cmp -s .ci/pre-commit "$$hooks/pre-commit"; then \
	   echo "make: $$hooks/pre-commit is another hook: left as it is (skiplock's is .ci/pre-commit)" >&2; \
	   exit 1; \
	 fi && \
	 install -m 755 .ci/pre-commit "$$hooks/pre-commit" && \
	 echo "make: installed $$hooks/pre-commit: ruff and mypy run before every commit"

migrate: $(STAMP)
	@$(BIN)/skiplock migrate --demo

worker: migrate
	@echo "make: starting the pool (Ctrl-C stops it). To see jobs run, in another terminal:"
	@echo "make:   make demo                  a demo user's journal through all six job types"
	@echo "make:   .venv/bin/skiplock stats   what the queue holds (or: make dashboard)"
	@exec $(BIN)/skiplock worker $(ARGS)

# A run that collects one of the dashboard's browser tests installs Debian's
# chromium first if it is missing, and says so (tests/dashboard/chromium.py);
# any other run never looks for it.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The edit-run loop's lane, under a minute: every test but those marked `pool`
# (real `skiplock worker` processes) or `slow` (tests/conftest.py gives the
# marks); `make test` runs them all (docs/development.md).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not pool and not slow" $(PYTEST_ARGS)

# The same install ahead of time (a no-op when chromium is there).
chromium:
	@$(PYTHON) tests/dashboard/chromium.py

# The web dashboard on 127.0.0.1:8484 (ARGS="--allow-actions" to act).
dashboard: migrate
	exec $(BIN)/skiplock dashboard $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# PgQueuer and matplotlib live in a bench-only virtualenv, never in the project's
# dependencies; bench/peers.py drives PgQueuer through that environment's Python.
BENCH_VENV := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp

$(BENCH_STAMP):
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet pgqueuer==1.6.0 asyncpg matplotlib
	@touch $@

bench-venv: $(BENCH_STAMP)

bench-peers: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench peers --peer-python $(BENCH_VENV)/bin/python $(ARGS)

# Process kills and database faults against real pools, then every invariant
# checked (docs/reliability.md): `make chaos ARGS="--seeds 1 2 3 --seconds 60"`.
chaos: $(STAMP)
	$(BIN)/python -m bench chaos $(ARGS)

# Four hosts (network namespaces of this machine, each with its own pool) and one
# database, for three minutes: partitions of single hosts, kills, a database
# restart, then the chaos soak's invariants and each host's jobs per second in
# each phase (docs/reliability.md). Needs root; the long run is
# `python -m bench soak` (30 minutes, 1,000,000 jobs).
soak: $(STAMP)
	$(BIN)/python -m bench soak --hosts 4 --minutes 3 --jobs 20000 $(ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The six job types end to end: a demo user, sample entries, the pool until the chains drain.
demo: migrate
	@$(BIN)/skiplock demo $(ARGS)
