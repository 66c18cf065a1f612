# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates or updates .venv by itself.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo demo-local test lint install protos

$(STAMP): pyproject.toml setup.py sparse_engine/native/forward.cpp
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(VENV)/bin/python -m sparse_engine.native || true  # the kernel's level, or why it is missing
	$(VENV)/bin/python -m sparsecl.protogen --setup  # the stub generator's own environment
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The service end to end: server on the embedded MLflow store, driven over gRPC. Each
# training phase stops at a plateau (auto epochs) or after 3 epochs, so the demo takes
# minutes; without --max-epochs a phase may run up to 30 (the library's default).
DEMO_FLAGS ?= --max-epochs 3
demo: $(STAMP)
	$(VENV)/bin/python -m client.demo $(DEMO_FLAGS)

# The same Split-MNIST run in-process, without the server.
demo-local: $(STAMP)
	$(VENV)/bin/sparsecl demo $(DEMO_FLAGS)

# Regenerate the gRPC stubs in sparsecl/ from protos/ (a test fails when they are stale).
protos: $(STAMP)
	$(VENV)/bin/python -m sparsecl.protogen

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy
