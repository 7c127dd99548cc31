# forecaster: two commands on a fresh machine, `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# apt-get needs root: sudo when not root already.
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install tools demo test lint docs check pretrain lock clean

install: $(STAMP)

# torch's build is whichever the pip index serves for the pinned version: PyPI's Linux
# wheel is the CUDA build. On a CPU-only machine without a local CPU wheel, take it from
# the PyTorch CPU index: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

# The one torch release the project runs on (deploy/Dockerfile pins the same).
TORCH  := torch==2.13.0

# Reinstall only when the project's metadata changes. torch is pinned first and
# exactly: an unpinned torch would pull several GB of CUDA packages on a CPU box.
# The project was the distribution "forecaster" before it took its PyPI name: a venv
# that still has that one loses it, or its copy could shadow this checkout.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip uninstall --quiet --yes forecaster
	$(PY) -m pip install --quiet -e ".[demo,test,bench,tune]"
	touch $(STAMP)

demo: install
	$(PY) -m forecaster.tools.demo --config config.yaml

# promtool and prometheus, for the tests of deploy/prometheus (Debian's prometheus package).
tools:
	@(command -v promtool && command -v prometheus) >/dev/null || ($(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)

test: install tools lint
	$(PY) -m pytest

# ruff's lint and its formatter's check (configured in pyproject.toml); `ruff format .` fixes the latter.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The site of docs/ into site/, strictly: a broken link or a page missing from the nav fails (the tests build it too).
docs: install
	$(PY) -m mkdocs build --strict

check: install
	$(VENV)/bin/forecaster check -c config.yaml

# Refit the shipped starting weights in models/ (seeded, reproducible).
pretrain: install
	for p in stock weather power_load; do \
	  $(VENV)/bin/forecaster pretrain -c config.yaml --pipeline $$p || exit 1; \
	done

# deploy/requirements.lock, the image's dependencies pinned with their hashes: the core and
# LOCK_EXTRAS, resolved for the image (Linux x86_64, Python 3.11) with torch's CPU build,
# whose own dependencies it pins; torch itself the Dockerfile installs from its variant's
# index. TORCH_SOURCE says where torch's CPU wheel is: a folder of wheels does too
# (make lock TORCH_SOURCE="--find-links DIR --index-strategy unsafe-best-match").
LOCK         := deploy/requirements.lock
LOCK_EXTRAS  := confluent
TORCH_SOURCE ?= --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match

lock: install
	$(PY) -m pip install --quiet "uv>=0.5"
	echo "$(TORCH)" | $(VENV)/bin/uv pip compile pyproject.toml - $(addprefix --extra ,$(LOCK_EXTRAS)) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) \
	  --generate-hashes --no-emit-package torch --custom-compile-command "make lock" --upgrade --output-file $(LOCK)

clean:
	rm -rf $(VENV) state site .pytest_cache
