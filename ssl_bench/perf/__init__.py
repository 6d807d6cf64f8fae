"""`ssl-bench-perf`: how fast the tensor pipeline is, measured side by side in one run.

The design bets that building whole batches with tensor ops (one uint8 tensor on the
model's device, `augment`, `task.make_batch`) beats the conventional per-sample pipeline
(PIL images, torchvision transforms, per-sample pseudo-labels, a DataLoader with workers),
and that caching frozen conv2 features makes the evaluator cheap. This tool measures those
claims on the machine it runs on, with the same model, batch size and task settings for
both pipelines, and writes one row per measurement (name, task, value, unit, goal, met) to
a CSV, plus a Markdown table:

a. `batch_build_fraction`: our batch build (index -> to_float -> augment -> make_batch, as
   `train.pretrain` does it) as a fraction of a whole training step.
b. `batchgen_*`: batch generation alone, ours vs the conventional DataLoader (images/s);
   `pretrain_*`: whole pretraining steps, ours vs conventional (images/s).
c. `eval_*`: the evaluator's conv3 + linear training on cached conv2 features vs
   recomputing conv1-conv2 every step (`eval.feature_cache=false`): steps/s and accuracy.
d. `backbone_*` / `matmul_gflops`: achieved FLOP/s of backbone training vs this machine's
   float32 matmul rate.
e. `eval_peak_*`: peak memory of the cached-feature evaluator over the whole training set,
   measured in a fresh process, and the theoretical size of the cached tensors.
f. `precision_*`: the bf16 lever. Backbone training steps (small, small2 and the
   configured backbone) and n×n matmuls in fp32 and under bf16 autocast, side by side, and
   what `precision=auto` picks on this machine.
g. `jobs_*`: the parallelism lever on a CPU. Backbone training images/s of one process
   using every core against as many single-thread processes at once (a joblib sweep with
   one job per core), summed.

Timings: warm-up calls first, then `--repeats` windows of calls (CUDA synchronised at the
window edges); a measurement is the median window's time per call.
"""

from __future__ import annotations

from ssl_bench.perf.cli import main
from ssl_bench.perf.conventional import (
    ArrayImages,
    PretextDataset,
    conventional_batches,
    conventional_images,
    conventional_transform,
    to_model_batch,
)
from ssl_bench.perf.results import Recorder, Row
from ssl_bench.perf.steps import (
    DEFAULT_DATA_ROOT,
    PRETRAIN_GOALS,
    SEED,
    TASKS,
    OurBatches,
    Trainer,
    build_task,
    compose_config,
    make_backbone,
)
from ssl_bench.perf.timing import sync, timed

__all__ = [
    "main", "DEFAULT_DATA_ROOT", "OurBatches", "PRETRAIN_GOALS", "SEED", "TASKS", "Trainer",
    "build_task", "compose_config", "make_backbone", "ArrayImages", "PretextDataset",
    "conventional_batches", "conventional_images", "conventional_transform", "to_model_batch",
    "Recorder", "Row", "sync", "timed",
]
