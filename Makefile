# The two commands of the README, on a fresh machine or a used one:
#
#   make demo    set up .venv (once) and run the PruneTrain demo
#   make test    set up .venv (once) and run the test suite (what CI runs)
#
# Each creates the virtualenv $(VENV) when it is missing and installs the
# project into it when setup.py is newer than the last install (a stamp file
# in the venv), so a second run goes straight to the work. `.ci/run` calls
# `make test VENV=<a fresh folder>`. Make, not nox or tox: it is on every
# machine this project runs on, and needs nothing installed first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two test processes: a test's time is mostly single-threaded tracing.
PYTEST_ARGS ?= -q -n 2

.PHONY: demo test

demo: $(VENV)/.installed-demo
	$(BIN)/python -m tf_prunetrain.demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-demo: setup.py | $(BIN)/python
	$(BIN)/pip install -e ".[cpu,data,plots]"
	touch $@

# tf-keras and TFMOT come with --no-deps (README, "Handing the pruned model
# to TFMOT"): their own requirements would replace TensorFlow's CPU build.
$(VENV)/.installed-test: setup.py | $(BIN)/python
	$(BIN)/pip install -e ".[cpu,data,test,tfmot]"
	$(BIN)/pip install --no-deps "tf-keras==2.21.*" \
	    "tensorflow-model-optimization==0.8.1"
	touch $@
