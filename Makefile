# Two entry points: `make demo` and `make test`. Both set everything up first and are idempotent:
# each set-up step leaves a stamp in the venv and is redone only when its inputs change.
#
# PYTHON: the Python of the ROS 2 distribution to match, as a version or an interpreter: 3.12 (default:
# Jazzy, Kilted, the GPU machine), 3.10 (Humble), python3.10, /path/to/python. Each Python X.Y gets its own
# venv (.venv for the default one, .venv-pyX.Y for the others), so switching between them rebuilds nothing.
PYTHON ?= 3.12
DEFAULT_PYTHON_VERSION := 3.12
# The interpreter is located by scripts/find_python.sh: PATH first, then pyenv's versions folder (a pyenv
# shim of a version that is not the active one exists on PATH but fails).
PYTHON_BIN := $(shell bash scripts/find_python.sh '$(PYTHON)')
ifeq ($(PYTHON_BIN),)
$(error no Python '$(PYTHON)' found: see the line above, or pass PYTHON=/path/to/python)
endif
PYTHON_VERSION := $(shell '$(PYTHON_BIN)' -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV ?= $(if $(filter $(DEFAULT_PYTHON_VERSION),$(PYTHON_VERSION)),.venv,.venv-py$(PYTHON_VERSION))
PY := $(VENV)/bin/python
PYTHON_STAMP := $(VENV)/.stamp-python
DEPS_STAMP := $(VENV)/.stamp-deps
PROJECT_STAMP := $(VENV)/.stamp-project
MSGS_STAMP := $(VENV)/.stamp-msgs
MSG_SOURCES := $(shell find msg -type f 2>/dev/null)

.PHONY: setup test demo bench clean FORCE mutation

setup: $(DEPS_STAMP) $(PROJECT_STAMP) $(MSGS_STAMP)

# Checked on every run; the stamp changes (and everything below is redone) only when the venv was (re)created
# for another Python.
$(PYTHON_STAMP): FORCE
	@bash scripts/ensure_venv.sh $(VENV) '$(PYTHON_BIN)'

$(DEPS_STAMP): $(PYTHON_STAMP) requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# --use-pep517: the pip of Python 3.10 (23.0) would otherwise run the deprecated `setup.py develop`, which
# current setuptools refuses for this setup.cfg.
$(PROJECT_STAMP): $(DEPS_STAMP) setup.py setup.cfg
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --use-pep517 -e .
	touch $@

# ROS 2 interfaces (casnet_msgs; vision_msgs and the Autoware messages where no ROS install provides them) built
# into the venv.
$(MSGS_STAMP): $(DEPS_STAMP) $(MSG_SOURCES) scripts/build_interfaces.sh
	bash scripts/build_interfaces.sh $(VENV)
	touch $@

test: setup
	bash scripts/check_py310.sh $(VENV)
	$(PY) -m pytest -q test

demo: setup
	VENV=$(VENV) bash scripts/demo.sh

bench: setup
	$(PY) bench/bench_model.py
	$(PY) bench/bench_postprocess.py
	$(PY) bench/bench_node.py

# Mutation testing (slow, not part of `make test`): mutmut over the modules of scripts/mutation.cfg, each against
# its focused tests, in scratch copies under build/mutation; MODULES="targets pq" picks some. Review: docs/mutation.md.
mutation: setup
	bash scripts/mutation.sh $(PY) $(MODULES)

clean:
	rm -rf $(VENV) build *.egg-info
