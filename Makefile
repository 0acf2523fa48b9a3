PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint unit bench clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/onnxdeploy pipeline digits-cnn --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

unit: $(STAMP)
	$(BIN)/pytest -q

test: browser lint unit

# Debian tools the tests use: chromium (the HTML report is tested in a real headless browser) and
# wrk (the wrk load engine). Installed when we can (root with apt-get); a test without its tool
# skips and says why, which counts as not run.
DEBIAN_TOOLS := chromium wrk
browser:
	@missing=""; for t in $(DEBIAN_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null 2>&1; } \
	    || echo "could not install$$missing: tests that need them will be skipped"; \
	  else echo "not root: install$$missing with apt-get, or tests that need them will be skipped"; fi; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/quantize.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
