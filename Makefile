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

.PHONY: setup test test-jazzy demo lint bench clean

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

# The ROS layer again on ROS 2 Jazzy (rclpy 7, Fast DDS 2.14) in a virtualenv of its own, .venv-jazzy: the node,
# its lifecycle and stereo forms over DDS, the bag tools and the demo. Not part of `make test` (a second install
# of torch and the rest: ~1.5 min, then ~5 min of tests); run it when the ROS layer changes. Without a sourced
# ROS 2: its PYTHONPATH would put that rclpy before the wheels' (the first line checks).
JAZZY_VENV := .venv-jazzy
JAZZY_STAMP := $(JAZZY_VENV)/.installed
JAZZY_TESTS ?= test/test_node_units.py test/test_node_integration.py test/test_node_stream_changes.py \
	test/test_lifecycle_node.py test/test_stereo_node.py test/test_bag_play.py test/test_image_conversion.py \
	test/test_demo.py test/test_colcon_install.py

$(JAZZY_VENV)/bin/python:
	$(PYTHON) -m venv $(JAZZY_VENV)

$(JAZZY_STAMP): requirements.txt requirements-dev.txt requirements-ros-jazzy.txt setup.py | $(JAZZY_VENV)/bin/python
	$(JAZZY_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt \
		-r requirements-ros-jazzy.txt
	$(JAZZY_VENV)/bin/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(JAZZY_STAMP)

test-jazzy: $(JAZZY_STAMP)
	$(JAZZY_VENV)/bin/python -c 'import sys, rclpy; from importlib.metadata import version; \
		sys.exit(f"error: rclpy comes from {rclpy.__file__}, not $(JAZZY_VENV) (a sourced ROS 2?)") \
		if "/$(JAZZY_VENV)/" not in rclpy.__file__ else print("rclpy", version("ros-jazzy-rclpy"), "(Jazzy)")'
	$(JAZZY_VENV)/bin/python -m pytest $(PYTEST_ARGS) $(JAZZY_TESTS)

demo: $(STAMP)
	$(BIN)/illexp_demo --out demo_out

lint: $(STAMP)
	$(BIN)/ruff check .

# The node's default path (fast mode), as the README's runtime table; --both adds full mode (minutes on a CPU).
bench: $(STAMP)
	$(BIN)/illexp_bench --backend auto --fast --sizes 640x480,1280x720 --frames 30

clean:
	rm -rf $(VENV) $(JAZZY_VENV) demo_out .pytest_cache .ruff_cache *.egg-info
