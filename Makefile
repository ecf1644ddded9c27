# Two commands are the contract (see README.md):
#   make demo   set up a virtualenv if missing, then run the main job on the embedded data
#   make test   set up both stacks' virtualenvs if missing, then run the whole suite on each
# TF=1.15 or TF=2.15 picks one stack explicitly for either target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The TF 2.15 stack wants Python 3.9-3.11; the TF 1.15 stack needs Python 3.7 (its last supported Python).
PY3X ?= $(shell for p in python3.11 python3.10 python3.9; do \
	  if $$p -c '' >/dev/null 2>&1; then $$p -c 'import sys; print(sys.executable)'; break; fi; done)
PY37 ?= $(shell if python3.7 -c '' >/dev/null 2>&1; then python3.7 -c 'import sys; print(sys.executable)'; \
	elif command -v pyenv >/dev/null 2>&1 && [ -x "$$(pyenv prefix 3.7.16 2>/dev/null)/bin/python3.7" ]; then \
	  echo "$$(pyenv prefix 3.7.16)/bin/python3.7"; fi)

VENV_TF2 := .venv/tf2.15
VENV_TF1 := .venv/tf1.15
TF ?=
DEMO_ARGS ?=
PYTEST_ARGS ?=
# Test workers (pytest-xdist): one per core, at most 4 (each holds a TensorFlow); JOBS=1 runs in one process.
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); if [ $$n -gt 4 ]; then n=4; fi; echo $$n)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help demo test test-tf2.15 test-tf1.15 venvs clean

help:
	@echo "make demo   # train/eval/export the demo on embedded data (TF=1.15|2.15 to choose the stack)"
	@echo "make test   # run the test suite on TF 2.15/Python 3.11 and TF 1.15/Python 3.7"

$(VENV_TF2)/.installed: setup.py
	@test -n "$(PY3X)" || { echo "error: no Python 3.9-3.11 interpreter found for the TF 2.15 stack"; exit 1; }
	@echo ">> creating $(VENV_TF2) with $(PY3X)"
	rm -rf $(VENV_TF2) && $(PY3X) -m venv $(VENV_TF2)
	@# `lite` too: the tests run `mnv2 predict --tflite / --onnx` with TensorFlow made unimportable.
	$(VENV_TF2)/bin/pip install -q -e '.[cpu,test,lite]'
	@# The `onnx` extra's packages, but tf2onnx without its protobuf ~=3.20 pin: protobuf 3.20 has no C++ build
	@# for Python 3.11, and its pure-Python one makes TensorFlow's graph building (the whole suite) ~2x slower.
	$(VENV_TF2)/bin/pip install -q --no-deps tf2onnx==1.16.1
	$(VENV_TF2)/bin/pip install -q onnx==1.16.2 onnxruntime==1.19.2 requests six
	@touch $@

$(VENV_TF1)/.installed: setup.py
	@test -n "$(PY37)" || { echo "error: no Python 3.7 interpreter found for the TF 1.15 stack"; exit 1; }
	@echo ">> creating $(VENV_TF1) with $(PY37)"
	rm -rf $(VENV_TF1) && $(PY37) -m venv $(VENV_TF1)
	$(VENV_TF1)/bin/pip install -q --upgrade "pip<24" "setuptools<68" wheel
	$(VENV_TF1)/bin/pip install -q -e '.[test]'
	@touch $@

venvs: $(VENV_TF2)/.installed
	@if [ -n "$(PY37)" ]; then $(MAKE) --no-print-directory $(VENV_TF1)/.installed; fi

define run_tests
	@$(1)/bin/python -c "import sys, tensorflow as tf; print('== TensorFlow %s on Python %s ==' % (tf.__version__, sys.version.split()[0]))"
	$(1)/bin/python -m pytest tests -q -p no:cacheprovider --durations=15 $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist loadfile) $(PYTEST_ARGS)
endef

test-tf2.15: $(VENV_TF2)/.installed
	$(call run_tests,$(VENV_TF2))

test-tf1.15: $(VENV_TF1)/.installed
	$(call run_tests,$(VENV_TF1))

# Runs both stacks even when the first fails, then fails if either did.
test:
ifeq ($(TF),2.15)
	@$(MAKE) --no-print-directory test-tf2.15
else ifeq ($(TF),1.15)
	@$(MAKE) --no-print-directory test-tf1.15
else
	@status=0; \
	$(MAKE) --no-print-directory test-tf2.15 || status=1; \
	if [ -n "$(PY37)" ]; then $(MAKE) --no-print-directory test-tf1.15 || status=1; \
	else echo "!! Python 3.7 not found (python3.7 on PATH or 'pyenv prefix 3.7.16'): the TF 1.15 stack was NOT tested"; fi; \
	if [ $$status -ne 0 ]; then echo "!! tests failed on at least one TensorFlow stack"; fi; \
	exit $$status
endif

demo:
ifeq ($(TF),2.15)
	@$(MAKE) --no-print-directory $(VENV_TF2)/.installed
	@echo ">> demo on the TF 2.15 stack (TF=2.15)"
	$(VENV_TF2)/bin/python -m pipelines demo $(DEMO_ARGS)
else ifeq ($(TF),1.15)
	@$(MAKE) --no-print-directory $(VENV_TF1)/.installed
	@echo ">> demo on the pinned TF 1.15 stack (TF=1.15)"
	$(VENV_TF1)/bin/python -m pipelines demo $(DEMO_ARGS)
else
	@if [ -n "$(PY37)" ]; then \
	  echo ">> Python 3.7 found: demo on the pinned TF 1.15 stack (TF=2.15 to choose the other)"; \
	  $(MAKE) --no-print-directory demo TF=1.15; \
	else \
	  echo ">> Python 3.7 not found: demo on the TF 2.15 stack"; \
	  $(MAKE) --no-print-directory demo TF=2.15; \
	fi
endif

clean:
	rm -rf .venv demo_output
