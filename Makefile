# `make demo` and `make test` each set up .venv from scratch if needed, then run.
# `make test` also installs what the tests need beyond Python packages (Chromium, for the
# report's browser test) where the machine allows it (root with apt-get).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,ray
BIN    := $(VENV)/bin
comma  := ,
STAMP  := $(VENV)/.flatvol-installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo test lint bench clean setup browser

setup: $(STAMP)

# torch is installed first and pinned, so the project's torch>= range is already satisfied
# and pip never pulls a different (multi-GB CUDA) build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/flatvol demo --out demo_out

test: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Chromium renders the HTML report in tests/analysis/test_analysis_browser.py.
browser:
	@sh scripts/install_chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts examples

clean:
	rm -rf $(VENV) demo_out .pytest_cache
