# One-command set-up: every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo demo-vqa bench clean-venv

$(STAMP): requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt pytest==9.2.0 pytest-xdist==3.8.0
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Tests run in as many processes as the machine has cores (one torch thread each), handed out one
# test at a time (balances better than by file, measured: 135 s vs 154 s on 2 cores).
test: $(STAMP)
	$(PY) -m pytest -q -n auto --dist load

demo: $(STAMP)
	bash image_classification_experiments/run_fashion_mnist_demo.sh

demo-vqa: $(STAMP)
	bash vqa_experiments/run_easy_vqa_demo.sh

bench: $(STAMP)
	$(PY) benchmarks/streaming_step.py

clean-venv:
	rm -rf $(VENV)
