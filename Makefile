# mlops-stack — the two commands of the README, and a few helpers.
#   make up     set up everything and bring the dev stack up on minikube (make forward: its port-forward again)
#   make test   install the test dependencies and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TOOLS := $(VENV)/tools
STACK ?= dev

.PHONY: up forward test venv test-deps bench-deps plan validate down clean

up:
	./scripts/up.sh

# the gateway's port-forward again (after a reboot or a minikube restart), and the URLs it serves
forward:
	./scripts/up.sh --forward

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip==26.3

venv: $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e .

test-deps: $(VENV)/bin/python $(TOOLS)/checkov/installed $(TOOLS)/mlserver/installed $(TOOLS)/seldon/installed \
		$(TOOLS)/kserve/installed
	$(VENV)/bin/pip install --quiet -e ".[test]" ./modules/mlflow/image/auth_plugin

# Tools whose own pins clash with the project's, each in a virtualenv of its own under .venv/tools:
# checkov; MLServer with its MLflow runtime (the registry models' server, from the image's file);
# Seldon Core's Python wrapper with the mnist model server's packages (its image's file).
define tool_venv
	rm -rf $(@D) && $(PYTHON) -m venv $(@D)
	$(@D)/bin/pip install --quiet $(1)
	touch $@
endef

$(TOOLS)/checkov/installed: policy/checkov-requirements.txt | $(VENV)/bin/python
	$(call tool_venv,-r $<)
	ln -sf $(CURDIR)/$(@D)/bin/checkov $(VENV)/bin/checkov

$(TOOLS)/mlserver/installed: modules/serving/mlserver-image/requirements.txt | $(VENV)/bin/python
	$(call tool_venv,-r $<)

# torch 2.13.0 is the CPU build (the image takes it from PyTorch's CPU index)
$(TOOLS)/seldon/installed: workloads/mnist/requirements.txt | $(VENV)/bin/python
	$(call tool_venv,torch==2.13.0 -r $<)

# benchmarks only (not CI): MLServer with torch, to serve mnist's pyfunc over V2 beside its Seldon wrapper
# (benchmarks/serving_overhead.py --model mnist)
bench-deps: test-deps $(TOOLS)/mlserver-torch/installed

$(TOOLS)/mlserver-torch/installed: modules/serving/mlserver-image/requirements.txt | $(VENV)/bin/python
	$(call tool_venv,torch==2.13.0 -r $<)

# the kserve SDK's typed models (InferenceService round trip); kserve 0.20.0's openapi models need a
# kubernetes client still generated in the same style (34+ switched generators)
$(TOOLS)/kserve/installed: | $(VENV)/bin/python
	$(call tool_venv,kserve==0.20.0 kubernetes==33.1.0)

test: test-deps
	# most of the suite waits on real servers: three workers on two cores, each file on one worker
	# (a file's tests share their servers and keep their order)
	$(VENV)/bin/python -m pytest -n 3 --dist loadfile

plan: venv
	$(VENV)/bin/mlops plan --stack $(STACK)

validate: venv
	$(VENV)/bin/mlops validate --stack $(STACK)

down:
	./scripts/up.sh --destroy

clean:
	rm -rf build .pytest_cache
