# ssl_bench: every target sets up its own environment (.venv) when it is missing.
PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
DATA_ROOT ?= ../shared/data/cifar10-jpeg
PROFILE   ?= cpu
SEEDS     ?= 0,1,2
# every method, read from the benchmark experiment (the list of ssl_bench/methods.py)
METHODS   := $(shell sed -n 's/^ *task: *//p' conf/experiment/benchmark.yaml)
TASKS     ?= $(METHODS)
ARGS      ?=

NPROC ?= 2

.PHONY: list-methods setup wheel test test-slow test-all test-real smoke show benchmark converge pretrain-curve benchmark-slurm ddp transfer search search-benchmark leaderboard perf lint clean

list-methods:                    ## the method lists the targets use (benchmark, smoke)
	@echo "TASKS=$(TASKS)"
	@echo "SMOKE_TASKS=$(SMOKE_TASKS)"

setup: $(VENV)/.installed

# torch/torchvision: the builds that exist for this Python and CPU architecture are pinned
# here (the x86_64 pair is the one available offline on the project machines).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	case "$$(uname -m)" in \
	  x86_64)  $(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1 ;; \
	  aarch64) $(BIN)/pip install --quiet torch==2.9.1 torchvision==0.24.1 ;; \
	  *)       $(BIN)/pip install --quiet torch torchvision ;; \
	esac
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# build isolation, as the editable install above: the build gets its own setuptools
wheel: setup                     ## dist/ssl_bench-<version>-py3-none-any.whl, the Hydra configs inside
	$(BIN)/pip wheel --quiet --no-deps . -w dist

test: setup                      ## fast tier: synthetic data, in-process, at most 5 minutes on 2 cores
	$(BIN)/python -m pytest -q -m "not slow and not real_data" $(ARGS)

test-slow: setup                 ## slow tier: tests that start real processes (CLI, torchrun, joblib, kill -9)
	$(BIN)/python -m pytest -q -m "slow and not real_data" $(ARGS)

test-all: setup                  ## every tier: fast, slow and (with DATA_ROOT) real data
	$(BIN)/python -m pytest -q -m "not slow and not real_data" $(ARGS)
	$(BIN)/python -m pytest -q -m "slow and not real_data" $(ARGS)
	SSL_BENCH_CIFAR10=$(DATA_ROOT) $(BIN)/python -m pytest -q -m real_data $(ARGS)

test-real: setup                 ## real-data tier: needs CIFAR-10 at DATA_ROOT
	SSL_BENCH_CIFAR10=$(DATA_ROOT) $(BIN)/python -m pytest -q -m real_data $(ARGS)

SMOKE_TASKS ?= $(METHODS)

smoke: setup                     ## every task through the whole pipeline on synthetic data, in seconds
	$(BIN)/ssl-bench -m profile=smoke data=synthetic task=$(SMOKE_TASKS) paths.runs_dir=runs/smoke progress=false $(ARGS)
	$(BIN)/ssl-bench-leaderboard --path runs/smoke/leaderboard.csv

benchmark: setup                 ## every method x SEEDS on real CIFAR-10 with PROFILE; rerun to resume
	$(BIN)/ssl-bench experiment=benchmark task=$(TASKS) seed=$(SEEDS) profile=$(PROFILE) data.root=$(DATA_ROOT) $(ARGS)
	$(BIN)/ssl-bench-leaderboard --path runs/leaderboard.csv

# The convergence check: CHECK_TASKS x SEEDS rerun with twice the labelled-sample budget;
# the report marks each checked cell (pass / fail) and every unchecked one.
CHECK_TASKS ?= random,rotation,supervised

converge: setup                  ## convergence check of CHECK_TASKS at every K of PROFILE (budget x2)
	$(BIN)/ssl-bench experiment=converge task=$(CHECK_TASKS) seed=$(SEEDS) profile=$(PROFILE) data.root=$(DATA_ROOT) $(ARGS)
	$(BIN)/ssl-bench-leaderboard --path runs/leaderboard.csv

# Rotation pretrained for 1, 2, 4, 8 epochs, each evaluated at K=20 and 100 (with the random
# and supervised baselines at the same budget): how many epochs the profile needs.
CURVE_EPOCHS ?= 1,2,4,8
CURVE_ARGS = eval.labels_per_class=[20,100] eval.probes.enabled=false paths.runs_dir=runs/curve \
  profile=$(PROFILE) data.root=$(DATA_ROOT) train.seed=0 $(ARGS)

pretrain-curve: setup            ## runs/curve/: held-out rotation accuracy and K=20/100 accuracy against epochs
	$(BIN)/ssl-bench -m task=rotation train.epochs=$(CURVE_EPOCHS) $(CURVE_ARGS)
	$(BIN)/ssl-bench -m task=random,supervised $(CURVE_ARGS)
	$(BIN)/ssl-bench-curve --path runs/curve/leaderboard.csv --out runs/curve

# SLURM (conf/hydra/launcher/slurm.yaml): run from a checkout on a file system every node sees.
PARTITION ?=
GPUS      ?= 1
TIME_MIN  ?= 240

benchmark-slurm: setup           ## the benchmark as a SLURM job array (PARTITION, GPUS, TIME_MIN); waits for it
	$(BIN)/ssl-bench experiment=benchmark task=$(TASKS) seed=$(SEEDS) profile=$(PROFILE) data.root=$(DATA_ROOT) \
	  hydra/launcher=slurm $(if $(PARTITION),hydra.launcher.partition=$(PARTITION)) \
	  hydra.launcher.gpus_per_node=$(GPUS) hydra.launcher.timeout_min=$(TIME_MIN) progress=false $(ARGS)
	$(BIN)/ssl-bench-leaderboard --path runs/leaderboard.csv

TRANSFER_TO ?= image_folder
TRANSFER_ROOT ?= $(DATA_ROOT)

transfer: setup                  ## pretrain on CIFAR-10, evaluate on TRANSFER_TO at TRANSFER_ROOT
	$(BIN)/ssl-bench -m task=$(TASKS) seed=$(SEEDS) profile=$(PROFILE) data.root=$(DATA_ROOT) \
	  data@eval.data=$(TRANSFER_TO) eval.data.root=$(TRANSFER_ROOT) eval.data.image_size=32 $(ARGS)
	$(BIN)/ssl-bench-leaderboard --path runs/leaderboard.csv

ddp: setup                       ## one run data-parallel over NPROC processes (GPUs, or CPU with device=cpu): make ddp NPROC=4 ARGS='task=jigsaw'
	$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m ssl_bench data.root=$(DATA_ROOT) $(ARGS)

SEARCH_TASK    ?= rotation
SEARCH_PROFILE ?= cpu
TASKS_SEARCH   ?= rotation

search: setup                    ## DARTS search driven by SEARCH_TASK (SEARCH_PROFILE=cpu|gpu): genotype + alpha.png in runs/search/
	$(BIN)/ssl-bench-search task=$(SEARCH_TASK) search=$(SEARCH_PROFILE) data.root=$(DATA_ROOT) $(ARGS)

search-benchmark: setup          ## search with TASKS_SEARCH x SEEDS, pretrain + evaluate the found backbone vs the hand-designed one
	$(BIN)/ssl-bench-search --config-name search_benchmark task=$(TASKS_SEARCH) seed=$(SEEDS) search=$(SEARCH_PROFILE) \
	  profile=$(PROFILE) data.root=$(DATA_ROOT) $(ARGS)
	$(BIN)/ssl-bench-leaderboard --path runs/leaderboard.csv

show: setup                      ## PNGs of what each pretext task asks: runs/show/<task>.png
	for t in rotation jigsaw relative_position inpainting; do \
	  $(BIN)/ssl-bench-show task=$$t data=cifar10 data.root=$(DATA_ROOT) $(ARGS) || exit 1; done

leaderboard: setup               ## summary + runs/LEADERBOARD.md and plots, from runs/leaderboard.csv alone
	$(BIN)/ssl-bench-leaderboard --path runs/leaderboard.csv

perf: setup                      ## ours vs a conventional DataLoader pipeline, evaluator, FLOP/s, memory: runs/perf.{csv,md}
	$(BIN)/ssl-bench-perf --data-root $(DATA_ROOT) --out runs/perf.csv $(ARGS)

lint: setup
	$(BIN)/ruff check ssl_bench tests

clean:                           ## remove caches (not runs/)
	rm -rf .cache .pytest_cache .ruff_cache
