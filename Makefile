# The README's two commands are `make book` and `make test`; both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A CPU build of torch on machines without a GPU. Elsewhere, e.g.:
#   make setup TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
STAMP  := $(VENV)/.installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: setup book test lab execute bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[book,grading,test]"
	@touch $(STAMP)

book: setup
	$(BIN)/python tools/book.py --output _build

test: setup
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg \
		-p no:cacheprovider chapters

LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings

lab: setup
	@mkdir -p $(LAB_SETTINGS)
	@# Open the .py sources as notebooks (jupytext) on a double click.
	@echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}' \
		> $(LAB_SETTINGS)/overrides.json
	$(BIN)/jupyter lab --notebook-dir=chapters $(ROOT_FLAG)

execute: setup
	$(BIN)/python tools/execute.py chapters/[0-9][0-9]_*.py exercises/[0-9][0-9]_*.py

BENCHMARKS := import_time host_roofline decode_bandwidth vs_huggingface predicted_vs_measured

bench: setup
	@for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python benchmarks/$$b.py > /dev/null || exit 1; done
	@cat benchmarks/results/*.md

clean:
	rm -rf _build
