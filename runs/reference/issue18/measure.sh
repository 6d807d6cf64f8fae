#!/usr/bin/env bash
# issue 18 real-data measurements (from the snapshot worktree /work/wtM)
set -x
cd /work/wtM
PY=/work/main/.venv/bin/python
export PYTHONPATH=/work/wtM
D=/work/shared/data/cifar10-jpeg
R=runs/m18
date; lscpu | grep "Model name"
# 1. export + ssl-bench-eval equality on real CIFAR-10 (smoke sizes, fp32)
$PY -m ssl_bench task=rotation profile=smoke data.root=$D paths.runs_dir=$R/eq progress=false seed=0 precision=fp32 eval.finetune.enabled=true
W=$(ls -d $R/eq/pretrain/rotation_*)/backbone.safetensors
$PY -m ssl_bench.external $W paths.runs_dir=$R/eq progress=false seed=0 profile=smoke data.root=$D precision=fp32 eval.finetune.enabled=true
date
# 2. the reference run (bf16 rows as they are): cosine k-NN rows added, rotation backbone exported
mkdir -p $R/ref && cp -r /work/main/runs/reference/in_progress/{leaderboard.csv,pretrain} $R/ref/
$PY -m ssl_bench experiment=benchmark task=rotation,random seed=0,1,2 profile=cpu precision=bf16 data.root=$D paths.runs_dir=$R/ref progress=false
date
# 3. fine-tuning (fp32 here): the exported reference rotation backbone and random init, K grows
W=$(ls -d $R/ref/pretrain/rotation_*)/backbone.safetensors
for KS in "[20]" "[20,100]" "[20,100,400]"; do
  $PY -m ssl_bench.external $W -m seed=0,1,2 profile=cpu precision=fp32 data.root=$D paths.runs_dir=$R/ft progress=false "eval.labels_per_class=$KS" "eval.probes.labels_per_class=$KS" eval.finetune.enabled=true
  $PY -m ssl_bench -m task=random seed=0,1,2 profile=cpu precision=fp32 data.root=$D paths.runs_dir=$R/ft progress=false "eval.labels_per_class=$KS" "eval.probes.labels_per_class=$KS" eval.finetune.enabled=true
  date
done
