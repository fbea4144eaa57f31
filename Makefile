# maggotflow: the two commands a new user needs.
#   make demo   install into .venv, simulate data, train + evaluate a small tagger, tag a directory
#   make test   install into .venv and run the test suite
#
# torch: TORCH_SPEC picks the build. The default pins the CPU-capable 2.13.0; on a machine
# where plain PyPI would give a multi-GB CUDA build, point pip at PyTorch's CPU wheel index
# (make TORCH_INDEX=<url>), or use your site's CUDA build on GPU nodes (TORCH_SPEC=torch).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP := $(VENV)/bin/python -m pip
PY := $(VENV)/bin/python

.PHONY: install demo test benchmark lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[workflow,test,forest]'
	touch $@

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash workflow/demo.sh

benchmark: install
	$(PY) -m benchmarks

clean:
	rm -rf demo results logs .snakemake
