# GenLab: the README's two commands (`make lab`, `make test`) and the maintainer tasks.
# Everything runs inside a project-local virtualenv (.venv), created on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Jupyter and matplotlib keep their state inside the project, never in ~.
export JUPYTER_CONFIG_DIR  := $(CURDIR)/.jupyter/config
export JUPYTER_DATA_DIR    := $(CURDIR)/.jupyter/data
export JUPYTER_RUNTIME_DIR := $(CURDIR)/.jupyter/runtime
export IPYTHONDIR          := $(CURDIR)/.jupyter/ipython
export MPLCONFIGDIR        := $(CURDIR)/.jupyter/matplotlib
# JAX's persistent compilation cache (genlab.runtime): programs compiled once load next time.
export GENLAB_COMPILE_CACHE ?= $(CURDIR)/.jupyter/jax-cache
# Small models every run trains the same way (genlab.model_cache): trained once, then loaded.
export GENLAB_MODEL_CACHE ?= $(CURDIR)/.jupyter/models
# nbgrader calls tools of its environment (alembic) by name.
export PATH                := $(CURDIR)/$(BIN):$(PATH)

CHAPTERS := $(notdir $(wildcard solutions/[0-9][0-9]_*))
CH ?=
LAB_ARGS ?=
FROM ?=
WORKERS ?= 2
# One test process more than the cores: tests wait on kernels, sandboxes and nbgrader's
# subprocesses; on 2 cores a third process kept both busy (1.97 cores on average) and cut the
# clean-clone CI from 45.4 to 39.6 min (bench/results.md, "CI duration").
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
# Jupyter refuses to run as root (containers, CI) unless told it may.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup lab test release release-chapter collect grade feedback export similarity demo-grade bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else \
		"GenLab needs Python 3.10 or newer; run: make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Students: open the course (chapters/) in JupyterLab.
lab: setup
	$(BIN)/jupyter lab --ServerApp.root_dir=chapters $(ROOT_FLAG) $(LAB_ARGS)

## Maintainers and CI: the full test suite, on TEST_WORKERS processes (pytest-xdist; 0: one).
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

## Regenerate chapters/ from solutions/ (deterministic; commit the result).
release: setup
	for ch in $(CHAPTERS); do $(BIN)/nbgrader generate_assignment $$ch --force || exit 1; done

## Instructors (see README): one command per classroom step, CH=<chapter folder>.
release-chapter: setup
	@test -n "$(CH)" || (echo "usage: make release-chapter CH=00_jax_primer"; exit 2)
	$(BIN)/genlab release $(CH)

collect: setup
	@test -n "$(CH)" -a -n "$(FROM)" || (echo "usage: make collect CH=<chapter> FROM=<folder or .zip>"; exit 2)
	$(BIN)/genlab collect $(CH) --from "$(FROM)"

## Parallel, isolated autograde of every submission; report in reports/CH.csv.
grade: setup
	@test -n "$(CH)" || (echo "usage: make grade CH=<chapter folder, e.g. 00_jax_primer>"; exit 2)
	$(BIN)/genlab grade $(CH) --workers $(WORKERS)
	$(BIN)/genlab similarity $(CH)

feedback: setup
	@test -n "$(CH)" || (echo "usage: make feedback CH=<chapter folder>"; exit 2)
	$(BIN)/genlab feedback $(CH)

export: setup
	$(BIN)/genlab export --to grades.csv

## Answers that share code (between students, and with the course's own): reports/CH-similarity.*
similarity: setup
	@test -n "$(CH)" || (echo "usage: make similarity CH=<chapter folder>"; exit 2)
	$(BIN)/genlab similarity $(CH)

## Grade the bundled demo class (build/demo-class) end to end and print its table.
demo-grade: setup
	$(BIN)/genlab demo --workers $(WORKERS)

## Benchmarks -> bench/results.md (peers measured when installed: pip install -e '.[bench]').
bench: setup
	$(BIN)/python -m bench.run

lint: setup
	$(BIN)/ruff check lib tests bench
	$(BIN)/ruff format --check lib tests bench

clean:
	rm -rf .jupyter .pytest_cache .ruff_cache

## A class on JupyterHub (README, "A class on JupyterHub"); hub and hub-setup run as root.
HUB_STATE      ?= /srv/genlab-hub
HUB_EXCHANGE   ?= /srv/nbgrader/exchange
HUB_PYTHON     ?= $(CURDIR)/$(BIN)/python
HUB_INSTRUCTOR ?= genlab-instructor
STUDENTS       ?=
PASSWORDS      ?=
# The class's Python (class.json) and, when make runs as root, the instructor's account: the
# course folder and the exchange's course belong to the instructor.
HUB_CLASS_PYTHON = $(shell python3 -c 'import json; print(json.load(open("$(HUB_STATE)/class.json"))["python"])' 2>/dev/null)
HUB_AS_INSTRUCTOR = $(if $(filter 0,$(shell id -u)),runuser -u $(HUB_INSTRUCTOR) --) env -i \
	PATH=$(dir $(HUB_CLASS_PYTHON)):/usr/bin:/bin LANG=C.UTF-8 HOME=$$(getent passwd $(HUB_INSTRUCTOR) | cut -d: -f6) \
	GENLAB_HUB_STATE=$(HUB_STATE) $(HUB_CLASS_PYTHON) -m genlab.classroom.cli hub

.PHONY: hub hub-proxy hub-setup hub-release hub-grade hub-remove

hub-proxy:
	cd deploy/jupyterhub && npm ci --no-audit --no-fund

hub-setup: setup
	@test -n "$(STUDENTS)" || (echo "usage: make hub-setup STUDENTS=alice,bob [PASSWORDS=file] [HUB_PYTHON=...]"; exit 2)
	$(BIN)/genlab hub --state $(HUB_STATE) setup --students $(STUDENTS) --instructor $(HUB_INSTRUCTOR) \
		--exchange $(HUB_EXCHANGE) --python $(HUB_PYTHON) $(if $(PASSWORDS),--password-file $(PASSWORDS))

## The hub in the foreground (as root), on 127.0.0.1:8000 (GENLAB_HUB_IP / GENLAB_HUB_PORT).
hub: hub-proxy
	env -u JUPYTER_CONFIG_DIR -u JUPYTER_DATA_DIR -u JUPYTER_RUNTIME_DIR -u GENLAB_COMPILE_CACHE \
		-u GENLAB_MODEL_CACHE GENLAB_HUB_STATE=$(HUB_STATE) $(HUB_CLASS_PYTHON) -m genlab.classroom.cli hub start

hub-release:
	@test -n "$(CH)" || (echo "usage: make hub-release CH=00_jax_primer"; exit 2)
	$(HUB_AS_INSTRUCTOR) release $(CH)

hub-grade:
	@test -n "$(CH)" || (echo "usage: make hub-grade CH=00_jax_primer [WORKERS=2]"; exit 2)
	$(HUB_AS_INSTRUCTOR) grade $(CH) --workers $(WORKERS)

hub-remove:
	$(BIN)/genlab hub --state $(HUB_STATE) remove
