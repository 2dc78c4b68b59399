# Set-up and everyday commands. Each target bootstraps what it needs on a fresh machine
# (Python 3.11 and pip present): uv into .tools/, then the locked environment into .venv/.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
# Stage commands (`python -m flows.<stage>`) must find the locked environment's python first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never
export DO_NOT_TRACK := 1
# Runs a command with a Prefect server: $PREFECT_API_URL's, or a temporary one (flows/server.py).
PREFECT_HOME := $(CURDIR)/.prefect
WITH_SERVER := python -m flows.server run --

# The fast variant: every stage and the full test set, a stratified 20 % of the training set in
# 2 folds, 4 epochs of the study's optimiser (Adam) in batches of 64: in under 5 minutes on 2 cores
# it already shows the answer (the CNN about 13 points ahead; the default SGD schedule needs far
# more steps than this budget allows to get going).
QUICK := -S split.subsample=0.2 -S split.folds=2 -S train.epochs=4 -S train.batch_size=64 \
         -S train.optimizer=adam -S train.lr=0.002 -S train.weight_decay=0 -S train.parallel=2 \
         -S train.task_runner=processes

.PHONY: help setup repro quick study test lint bench push pull server worker stop deployment-run clean-checkpoints
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen
	touch $@

setup: $(VENV)/.synced  ## install the locked environment into .venv

repro: setup  ## run the whole pipeline with params.yaml as it is (dvc repro)
	$(WITH_SERVER) dvc repro

quick: setup  ## the fast variant end to end, as a DVC experiment in a temporary workspace (yours is untouched)
	name=quick-$$(date +%Y%m%d-%H%M%S) && $(WITH_SERVER) dvc exp run --temp --name $$name $(QUICK) && \
	  python -m flows.train_compare show $$name

study: setup  ## the study's own protocol (presets/study.yaml) as a DVC experiment: 4.5 to 8.5 h on 2 cores
	name=study-$$(date +%Y%m%d-%H%M%S) && $(WITH_SERVER) python -m flows.train_compare run \
	  --preset presets/study.yaml --name $$name $(if $(SET),$(foreach s,$(SET),--set $(s))) && \
	  python -m flows.train_compare show $$name

test: setup  ## the test suite
	python -m pytest

lint: setup  ## ruff
	python -m ruff check flows tasks tests benchmarks

bench: setup  ## every benchmark beside its reference: benchmarks/results.json and BENCHMARKS.md
	python -m benchmarks.suite

push: setup  ## send the data, models and report of dvc.lock to the DVC remote (see README: Sharing results)
	dvc push

pull: setup  ## fetch the data, models and report of dvc.lock from the DVC remote instead of retraining
	dvc pull

server: setup  ## a Prefect server in the background on 127.0.0.1:4200 (UI at http://127.0.0.1:4200)
	PREFECT_HOME=$(PREFECT_HOME) prefect server start --background --host 127.0.0.1 --port 4200
	python -m flows.server wait http://127.0.0.1:4200/api

worker: setup  ## register the train-compare deployment and execute its runs, in the background
	mkdir -p $(PREFECT_HOME)
	PREFECT_API_URL=http://127.0.0.1:4200/api nohup python -m flows.train_compare serve \
	  >> $(PREFECT_HOME)/worker.log 2>&1 & echo $$! > $(PREFECT_HOME)/worker.pid
	@echo "train-compare executor started (log $(PREFECT_HOME)/worker.log)"

stop:  ## stop the background server and worker
	@if [ -f $(PREFECT_HOME)/worker.pid ]; then kill $$(cat $(PREFECT_HOME)/worker.pid) 2>/dev/null; \
	  rm $(PREFECT_HOME)/worker.pid; echo "train-compare executor stopped"; fi
	-PREFECT_HOME=$(PREFECT_HOME) prefect server stop

deployment-run: setup  ## one run of the deployment, watched: prefect deployment run train-compare/<deploy.name>
	PREFECT_API_URL=http://127.0.0.1:4200/api prefect deployment run \
	  "train-compare/$$(python -c 'from tasks.config import load_params; print(load_params().deploy.name)')" --watch

clean-checkpoints:  ## forget interrupted and finished training runs (the next train retrains)
	rm -rf checkpoints
