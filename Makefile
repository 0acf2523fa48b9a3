PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint unit bench clean tools browser test-avx2 test-under-load

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

test: tools lint unit

# Debian tools the tests use: chromium (the HTML report is tested in a real headless browser),
# wrk (the wrk load engine), podman & co (containerize builds and runs images: tests/test_deploy.py;
# mmdebstrap makes its base image, catatonit is the image's init). Installed when we can (root
# with apt-get); a test without its tool skips and says why, which counts as not run.
# Each entry is COMMAND:PACKAGE (the package installed when the command is missing).
DEBIAN_TOOLS := chromium:chromium wrk:wrk podman:podman mmdebstrap:mmdebstrap runc:runc \
	catatonit:catatonit conmon:conmon newuidmap:uidmap \
	/usr/lib/cni/bridge:containernetworking-plugins
browser: tools
tools:
	@missing=""; for e in $(DEBIAN_TOOLS); do t=$${e%%:*}; p=$${e#*:}; \
	  { command -v $$t >/dev/null 2>&1 || [ -x "$$t" ]; } || missing="$$missing $$p"; done; \
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

# The CPU-sensitive quantize tests on an emulated AVX2 CPU without AVX-512 or VNNI (qemu-user's Haswell model):
# int8 numerics (u8 x s8 saturation) and our CPUID-read flags both follow the emulated CPU.
AVX2_TESTS := tests/test_env.py tests/test_quantize_fallback.py tests/test_quantize_outliers.py \
  tests/test_quantize_partial.py::test_fast_vad_static_search_keeps_proj_float_and_the_chained_state_holds \
  tests/test_quantize_partial.py::test_fast_conv_static_search_keeps_only_the_sensitive_layer_float
test-avx2: $(STAMP)
	@command -v qemu-x86_64 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user >/dev/null 2>&1; } \
	  || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user >/dev/null 2>&1; }
	qemu-x86_64 -cpu Haswell $(BIN)/python -m pytest -q -p no:cacheprovider $(AVX2_TESTS)

# make test while CPU hogs keep every core busy (scripts/test-under-load starts and stops them)
test-under-load: $(STAMP)
	scripts/test-under-load $(MAKE) test
