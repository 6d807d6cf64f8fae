#!/bin/bash
# Session of 2026-12-03 on Zen 3 (no bf16): precision check, then supervised_pretrain in fp32, then the 1-epoch rotation fp32 check.
cd /work/main
D=../shared/data/cifar10-jpeg
echo "== A precision check (eval side) $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m experiment=benchmark profile=cpu data.root=$D task=random,supervised seed=0,1,2 precision=fp32 \
  'eval.labels_per_class=[20,400]' eval.probes.enabled=false progress=false \
  leaderboard.path=runs/precision/leaderboard.csv hydra.sweep.dir=runs/precision/multirun
echo "== B supervised_pretrain fp32 $(date -u +%FT%TZ)"
make benchmark TASKS=supervised_pretrain ARGS="progress=false"
echo "== C rotation 1 epoch fp32 $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m profile=cpu data.root=$D task=rotation seed=0 precision=fp32 train.epochs=1 eval.min_steps=1500 \
  'eval.labels_per_class=[20,100]' eval.probes.enabled=false progress=false \
  leaderboard.path=runs/precision/leaderboard_pretrain.csv hydra.sweep.dir=runs/precision/multirun_pretrain
echo "== done $(date -u +%FT%TZ)"
