# The two commands of the README: `make demo` and `make test`. Both create .venv on first use and install
# the pinned dependencies; a stamp file makes the second run skip installs that are already satisfied.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REQS := requirements.txt requirements-dev.txt requirements-ros.txt setup.py
PYTEST_ARGS ?=

# With a sourced system ROS 2 (ROS_DISTRO set) the venv sees its rclpy and the PyPI ROS wheels are skipped.
ifdef ROS_DISTRO
VENV_FLAGS := --system-site-packages
ROS_REQS :=
else
VENV_FLAGS :=
ROS_REQS := -r requirements-ros.txt
endif

.PHONY: setup test demo lint bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(STAMP): $(REQS) | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt $(ROS_REQS)
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/illexp_demo --out demo_out

lint: $(STAMP)
	$(BIN)/ruff check .

# The node's default path (fast mode), as the README's runtime table; --both adds full mode (minutes on a CPU).
bench: $(STAMP)
	$(BIN)/illexp_bench --backend auto --fast --sizes 640x480,1280x720 --frames 30

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache *.egg-info
