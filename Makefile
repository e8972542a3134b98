# mlops-stack — the two commands of the README, and a few helpers.
#   make up     set up everything and bring the dev stack up on minikube
#   make test   install the test dependencies and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STACK ?= dev

.PHONY: up test venv test-deps plan validate mlflow-image down clean

up:
	./scripts/up.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==26.3

venv: $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e .

test-deps: $(VENV)/bin/python $(VENV)/bin/checkov
	$(VENV)/bin/pip install --quiet -e ".[test]"

# checkov's own pins clash with the project's: a separate virtualenv, linked into .venv/bin
$(VENV)/bin/checkov: policy/checkov-requirements.txt | $(VENV)/bin/python
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/pip install --quiet -r policy/checkov-requirements.txt
	ln -sf $(CURDIR)/$(VENV)/tools/checkov/bin/checkov $(VENV)/bin/checkov

test: test-deps
	$(VENV)/bin/python -m pytest

plan: venv
	$(VENV)/bin/mlops plan --stack $(STACK)

validate: venv
	$(VENV)/bin/mlops validate --stack $(STACK)

mlflow-image:
	minikube image build -t mlops-stack/mlflow-server:3.17.2-1 modules/mlflow/image

down:
	./scripts/up.sh --destroy

clean:
	rm -rf build .pytest_cache
