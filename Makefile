# Two entry points: `make demo` and `make test`. Both set everything up first and are idempotent:
# each set-up step leaves a stamp in .venv and is redone only when its inputs change.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.stamp-deps
PROJECT_STAMP := $(VENV)/.stamp-project
MSGS_STAMP := $(VENV)/.stamp-msgs
MSG_SOURCES := $(shell find msg -type f 2>/dev/null)

.PHONY: setup test demo bench clean

setup: $(DEPS_STAMP) $(PROJECT_STAMP) $(MSGS_STAMP)

$(DEPS_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(PROJECT_STAMP): $(DEPS_STAMP) setup.py setup.cfg
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# ROS 2 interfaces (casnet_msgs, and vision_msgs where no ROS install provides it) built into the venv.
$(MSGS_STAMP): $(DEPS_STAMP) $(MSG_SOURCES) scripts/build_interfaces.sh
	bash scripts/build_interfaces.sh $(VENV)
	touch $@

test: setup
	bash scripts/check_py310.sh $(VENV)
	$(PY) -m pytest -q test

demo: setup
	bash scripts/demo.sh

bench: setup
	$(PY) bench/bench_model.py
	$(PY) bench/bench_postprocess.py
	$(PY) bench/bench_node.py

clean:
	rm -rf $(VENV) build *.egg-info
