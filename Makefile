# GridWatch: two commands do everything.
#   make demo   - create .venv if missing, install GridWatch, run it on sample_data/
#   make test   - create .venv if missing, install GridWatch with test extras, run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/sample

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/gridwatch run --input sample_data --output $(OUT) --config configs/sample.toml
	$(BIN)/gridwatch evaluate $(OUT) sample_data/labels.json
	@echo "Outputs: $(OUT)/report.html (open in a browser), flags.csv, transformers.csv, data_quality.csv, plots/, run.json"

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_core.py

clean:
	rm -rf $(VENV) out .pytest_cache
