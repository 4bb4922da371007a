# The two set-up commands of the README are `make demo` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
UNAME := $(shell uname -s)

ifeq ($(UNAME),Linux)
  # Linux has no Metal: MLX's CPU backend. mlx-whisper declares torch: take the CPU build first,
  # or pip pulls a multi-GB CUDA build.
  EXTRAS := [cpu,asr]
  TORCH := torch==2.13.0
else
  EXTRAS := [asr]
  TORCH := torch
endif

.PHONY: install install-test demo test lint

install:
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".$(EXTRAS)"

install-test: install
	$(PIP) install -q -e ".[test]"
	# Kyutai's PyTorch moshi is the parity oracle; it pins an older torch but runs on 2.13.
	$(PIP) install -q --no-deps moshi==0.2.13

demo: install
	rolekit demo

lint:
	$(PYTHON) -m ruff check rolekit tests
	$(PYTHON) -m ruff format --check rolekit tests
	lint-imports

test: install-test lint
	$(PYTHON) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc
