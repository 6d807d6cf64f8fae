#!/bin/bash
# Session 27 (Zen 3, fp32), after session27.sh: item 8b for the five remaining methods, then item 4 (backbones).
set -f
cd /work/main
D=../shared/data/cifar10-jpeg
while pgrep -f session27.sh >/dev/null; do sleep 5; done
BN="experiment=benchmark profile=cpu data.root=$D eval.labels_per_class=[100] eval.probes.enabled=false progress=false leaderboard.path=runs/bn_recalibrate/leaderboard.csv"
echo "== 8b supervised_pretrain (fp32 pretraining) $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m $BN seed=0,1,2 eval.bn_recalibrate=true task=supervised_pretrain hydra.sweep.dir=runs/bn_recalibrate/multirun_fp32
for m in inpainting multitask multitask_all layerwise; do
  echo "== 8b $m (bf16 weights, external, fp32 evaluator, re-estimated BN) $(date -u +%FT%TZ)"
  .venv/bin/ssl-bench -m $BN seed=0,1,2 eval.bn_recalibrate=true task=external task.checkpoint=runs/bn_recalibrate/weights/$m hydra.sweep.dir=runs/bn_recalibrate/multirun_ext_$m
done
for m in inpainting multitask multitask_all layerwise; do
  echo "== 8b $m (external, fp32 evaluator, BN as in the benchmark) seed 0 $(date -u +%FT%TZ)"
  .venv/bin/ssl-bench -m $BN seed=0 eval.bn_recalibrate=false task=external task.checkpoint=runs/bn_recalibrate/weights/$m hydra.sweep.dir=runs/bn_recalibrate/multirun_ext_norecal_$m
done
B="profile=cpu data.root=$D seed=0 precision=fp32 train.epochs=1 eval.min_steps=1500 eval.labels_per_class=[20,100] eval.probes.enabled=false progress=false leaderboard.path=runs/backbones/leaderboard.csv"
echo "== 4 rotation small2+conv4 1 pass $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m $B task=rotation 'backbone.conv4={channels:[128],kernels:[3],pool:null}' hydra.sweep.dir=runs/backbones/multirun_rotation_small2_conv4
echo "== 4 rotation small 1 pass $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m $B task=rotation backbone=small hydra.sweep.dir=runs/backbones/multirun_rotation_small
echo "== 4 random small, small2 $(date -u +%FT%TZ)"
.venv/bin/ssl-bench -m $B task=random backbone=small,small2 hydra.sweep.dir=runs/backbones/multirun_random
echo "== done $(date -u +%FT%TZ)"
