# The README's two commands are `make book` and `make test`; both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Where torch comes from: left unset, tools/torch_index.py decides: PyTorch's CPU index on
# Linux without an NVIDIA GPU when that index answers (PyPI's Linux wheel is the CUDA build),
# else the configured index. Set it to choose yourself; TORCH_INDEX= is the configured index:
#   make setup TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu126
TORCH       ?= torch==2.13.0
ifeq ($(origin TORCH_INDEX),undefined)
TORCH_INDEX_ARGS = $$($(BIN)/python tools/torch_index.py)
else
TORCH_INDEX_ARGS = $(TORCH_INDEX)
endif
STAMP  := $(VENV)/.installed

.PHONY: setup book check-book test lab slides execute bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@index="$(TORCH_INDEX_ARGS)"; \
	echo "$(BIN)/python -m pip install --quiet $${index:+$$index }\"$(TORCH)\""; \
	$(BIN)/python -m pip install --quiet $$index "$(TORCH)"
	@# PYTHONWARNINGS: setuptools' notice about editable installs is not for readers.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e ".[book,grading,lab,test]"
	@touch $(STAMP)

# make book EXECUTE=0 builds the site from the committed notebooks, in seconds.
EXECUTE ?= 1

book: setup
	@$(BIN)/python tools/book.py --output _build $(if $(filter 0,$(EXECUTE)),--no-execute,)

# Every page of the built site opened in headless Chromium (Debian's chromium package), and
# the site's exercises and back matter read from its files (tests/test_site_*.py).
check-book: book
	BOOK_SITE=_build/html $(BIN)/python -m pytest -p no:cacheprovider tests/test_book_site.py \
		tests/test_site_*.py

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/sanitize.cfg \
		-p no:cacheprovider chapters

# JupyterLab on chapters/: the .py sources open as notebooks, MyST renders as on the site.
lab: setup
	@$(BIN)/python tools/lab.py

# make slides CHAPTER=05: JupyterLab on that chapter, its Slideshow button ready (offline).
slides: setup
	@test -n "$(CHAPTER)" || { echo "usage: make slides CHAPTER=NN, e.g. make slides CHAPTER=05" >&2; exit 2; }
	@$(BIN)/python tools/lab.py --slides "$(CHAPTER)"

execute: setup
	$(BIN)/python tools/execute.py chapters/[0-9][0-9]_*.py exercises/[0-9][0-9]_*.py

BENCHMARKS := import_time host_roofline decode_bandwidth vs_huggingface predicted_vs_measured \
              simulator_speed engine_vs_static simulator_vs_engine ragged_decode paged_kv \
              prefix_caching vs_vllm quantized_decode fusion attention moe_decode speculative \
              pruning collectives tensor_parallel cluster_speed grading_speed

bench: setup
	@for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python benchmarks/$$b.py > /dev/null || exit 1; done
	@cat benchmarks/results/*.md

clean:
	rm -rf _build
