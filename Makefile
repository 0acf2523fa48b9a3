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

# The HTML report is tested in a real headless browser (Debian's chromium). Install it when we can
# (root with apt-get); without it that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
	  || echo "chromium not installed: the browser test will be skipped"

bench: $(STAMP)
	$(BIN)/python benchmarks/quantize.py
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
