# Two commands: `make demo` and `make test`. Both create .venv and install the
# pinned dependency set (requirements.lock) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The install compiles no bytecode (11k files, 30 s here). The set-up then imports
# what a run, the server and the sandbox import (2.4k files, 12 s), which compiles and keeps them even where the
# shell sets PYTHONDONTWRITEBYTECODE (then nothing else would ever be compiled and kept: every `opsbook run`
# would compile prefect again); make's own commands keep what else they import.
RUN := env -u PYTHONDONTWRITEBYTECODE
# Two halves at once, one a core (9 s in a row, 6 s side by side here):
WARM_SERVER := import prefect.server.api.server, prefect.cli
WARM_RUN := from opsbook import cli, registry, runner; [rb.load() for rb in registry.RUNBOOKS.values()]; \
	import opensearchpy, moto.server, sandbox.server

.PHONY: demo test chaos serve setup bench bench-versus clean check-install

# uv installs the same pinned set as pip (requirements.lock constrains every package) in a quarter of the time
# (5 s against 20 s here: parallel downloads, no bytecode); where uv cannot be had, pip does it.
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	if $(BIN)/pip install -q "uv==0.13.9" && $(BIN)/uv pip install -q --python $(BIN)/python -c requirements.lock -e '.[test,sandbox]'; \
	then :; else echo "setup: uv unavailable, installing with pip"; \
	  $(BIN)/pip install -q --upgrade "pip>=24" && $(BIN)/pip install -q --no-compile -c requirements.lock -e '.[test,sandbox]'; fi
	$(RUN) $(BIN)/python -c "$(WARM_SERVER)" & warm=$$!; $(RUN) $(BIN)/python -c "$(WARM_RUN)" && wait $$warm
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(RUN) $(BIN)/opsbook demo

test: $(STAMP)
	$(RUN) $(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder -m "not chaos"

# The long batteries (kill trials, throttling, silent endpoints) and the fleet over 50 targets: minutes, not
# part of `make test`.
chaos: $(STAMP)
	$(RUN) $(BIN)/pytest -n 2 --dist loadfile -m chaos
	$(RUN) OPSBOOK_E2E_FLEET_ACCOUNTS=25 $(BIN)/pytest -q tests/e2e/test_fleet_postgres.py

# The Prefect UI with every runbook deployed: http://127.0.0.1:4200 . Against the
# embedded sandbox by default; `make serve SERVE_ARGS=` uses your AWS credentials.
SERVE_ARGS ?= --sandbox
serve: $(STAMP)
	$(RUN) $(BIN)/opsbook serve $(SERVE_ARGS)

# What the Docker image installs, into a fresh venv (no Docker engine here): after changing
# pyproject.toml, requirements.lock or the Dockerfile. A few minutes; not part of `make test`.
check-install: $(STAMP)
	$(RUN) OPSBOOK_E2E_INSTALL=1 $(BIN)/pytest -q tests/e2e/test_install.py

bench: $(STAMP)
	$(RUN) $(BIN)/python -m bench.run

# Side by side on one sandbox: the boto3 floor, opsbook cold/warm/served, Cloud Custodian (installed into
# bench/.venv-c7n on first use, never a project dependency). About 3 minutes; bench/README.md.
bench-versus: $(STAMP)
	$(RUN) $(BIN)/python -m bench.versus

clean:
	rm -rf $(VENV) *.egg-info
