# spa: build, test, demo.  Everything runs from a virtualenv in $(VENV).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CC ?= gcc
CWARN := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
	-Wno-sign-conversion -Wformat=2 -Wvla -fstack-protector-strong \
	-D_FORTIFY_SOURCE=2 -O2
CSRC := $(wildcard csrc/*.c)
PYTEST_ARGS ?=

.PHONY: all deps build test unit netns demo lint sanitize bench bench-quick clean

all: build

deps:
	@scripts/install-deps.sh

$(VENV)/.built: pyproject.toml setup.py csrc/build_ffi.py $(CSRC) \
		$(wildcard csrc/*.h) spa/_records.pyx
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

build: deps $(VENV)/.built

test: build
	$(PY) -m pytest $(PYTEST_ARGS) tests

unit: build
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

netns: build
	$(PY) -m pytest $(PYTEST_ARGS) tests/netns

demo: build
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/demo.sh

lint: build
	$(VENV)/bin/ruff check spa tests bench
	$(VENV)/bin/mypy
	@for f in $(CSRC) csrc/tests/*.c; do \
		$(CC) $(CWARN) -Icsrc -fsyntax-only $$f || exit 1; done
	@echo "C: $(words $(CSRC)) core sources and the C tests compile clean with $(CWARN)"

# The C tests (ring under ThreadSanitizer, parser and packet path under
# AddressSanitizer + UndefinedBehaviorSanitizer) are pytest drivers that
# build their own sanitized binaries.
sanitize: build
	$(PY) -m pytest $(PYTEST_ARGS) -m sanitize tests/unit

# Flood-resistance benchmarks, spa beside the stock fwknopd (root; writes
# bench/results/REPORT.md, summary.json and PNG plots).
bench: build
	$(PY) -m bench.run

bench-quick: build
	$(PY) -m bench.run --quick

clean:
	$(MAKE) -C bench clean
	rm -rf build $(VENV) *.egg-info spa/_core*.so spa/_records*.so spa/_records.c
