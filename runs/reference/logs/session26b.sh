#!/bin/bash
# After the precision check A (pid 9566) ends: the 1-epoch rotation fp32 check (C), then supervised_pretrain in fp32 (B).
cd /work/main
D=../shared/data/cifar10-jpeg
while kill -0 9566 2>/dev/null; do sleep 5; done
echo "== C rotation 1 epoch fp32 $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m profile=cpu data.root=$D task=rotation seed=0 precision=fp32 train.epochs=1 eval.min_steps=1500 \
  'eval.labels_per_class=[20,100]' eval.probes.enabled=false progress=false \
  leaderboard.path=runs/precision/leaderboard_pretrain.csv hydra.sweep.dir=runs/precision/multirun_pretrain
echo "== B supervised_pretrain fp32 $(date -u +%FT%TZ)"
make benchmark TASKS=supervised_pretrain ARGS="progress=false"
echo "== done $(date -u +%FT%TZ)"
