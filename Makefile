# The two set-up commands of the README are `make demo` and `make test`. Each first installs the
# system packages that are missing (scripts/setup-system.sh: apt-get on Debian/Ubuntu, brew on
# macOS; it prints every command it runs), then rolekit with pip.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
UNAME := $(shell uname -s)
# The CUDA major version the NVIDIA driver supports ("" without an NVIDIA driver).
CUDA_MAJOR := $(shell nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\).*/\1/p' | head -n 1)
SYSTEM_FLAGS :=

ifeq ($(UNAME),Linux)
  # mlx-whisper declares torch: take the CPU build first, or pip pulls a multi-GB CUDA build.
  TORCH := torch==2.13.0
  ifeq ($(CUDA_MAJOR),)
    EXTRAS := [cpu,asr]# no Metal, no NVIDIA driver: MLX's CPU backend
  else ifeq ($(CUDA_MAJOR),12)
    EXTRAS := [cuda12,asr]# MLX's CUDA backend built for CUDA 12 drivers
  else
    EXTRAS := [cuda,asr]# MLX's CUDA backend (CUDA 13)
  endif
else
  EXTRAS := [asr]
  TORCH := torch
endif

.PHONY: system install install-test demo test lint

system:
	scripts/setup-system.sh $(SYSTEM_FLAGS)

install: system
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".$(EXTRAS)"

# The test target's prerequisites also install the test system packages (ALSA utilities, Chromium).
install-test test: SYSTEM_FLAGS := --test
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

# `gpu` tests need a CUDA GPU and are deselected here (run them with `pytest -m gpu` on one).
# The tests run in TEST_WORKERS processes (pytest-xdist, a file per worker at a time; default: the
# CPU count, at most 4, since each worker builds the session's models; 0 runs them in this process).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, os.cpu_count() or 1))")
test: install-test lint
	$(PYTHON) -m pytest -q -m "not gpu" -n $(TEST_WORKERS) --dist loadfile --durations=15 tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc
