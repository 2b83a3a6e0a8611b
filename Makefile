# llmos — the two commands: `make chat` and `make test`. Everything sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llmos-installed

.PHONY: install browser chat demo test test-slow lint fix bench clean

# Create the virtualenv and install llmos with its dev extras (offline-safe: torch is the
# CPU wheel already on these machines, see DESIGN.md). Re-runs when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The web widget's tests drive Debian's chromium through chromedriver (no browser download).
# Installed when missing and apt is usable (root); otherwise those tests say why they skip.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "installing chromium + chromium-driver (apt)"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	    else echo "note: chromium/chromedriver missing and no root apt; browser tests will be skipped"; fi; }

chat: install           ## open the chat with the built-in demo assistant
	$(VENV)/bin/llmos chat

demo: install           ## print a scripted conversation (no TTY needed)
	$(VENV)/bin/llmos demo

test: install browser   ## the default suite (slow tests are marked and skipped)
	$(PY) -m pytest -q

test-slow: install browser ## everything, including longer training tests
	$(PY) -m pytest -q -m ""

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pip check                              # installed versions agree with each other
	$(PY) -m pytest -q tests/test_dependencies.py   # no known-vulnerable versions

fix: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install          ## quick versions of every benchmark
	$(PY) -m pip install --quiet -e '.[bench]'
	@for b in benchmarks/*.py; do case $$b in */_*) continue;; esac; echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
