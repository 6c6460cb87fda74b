# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean-venv browser

venv: $(STAMP)

# torch first, pinned to the CPU wheel; then memit with its pinned dependencies.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/memit demo

# The playground's browser tests drive Debian's Chromium: install it when it is missing and apt-get
# may (root); where it cannot be installed those tests skip and say why.
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && { $(APT) || { apt-get update -q >/dev/null 2>&1 && $(APT); }; }; } || \
	  echo "chromium could not be installed: the browser tests will skip" >&2

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP) browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
