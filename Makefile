# Each target does all of its own set-up on a fresh clone: virtual environment, install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.eocausal-installed
OUT ?= out/demo

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eocausal demo --out $(OUT)

# The browser test (tests/report/test_browser.py) opens the report in Debian's chromium; install it
# when it is missing and apt-get can (root, or sudo without a password). Never fails the build: without
# chromium that one test is skipped, with the reason.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (Debian package) for the browser test"; \
	  s=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
	  ($$s apt-get update -qq && $$s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "chromium not installed: the browser test will be skipped"
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out build *.egg-info
