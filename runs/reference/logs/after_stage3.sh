#!/bin/bash
# After stage 3 of the cpu reference run: a measurement of issue 15 on the same machine
# (the cores are shared by nothing else):
#  8b: BatchNorm re-estimation on unlabeled whole images (eval.bn_recalibrate=true), every
#      frozen method, K=100, the 3 seeds, the reference pretrainings (reused from runs/pretrain);
cd /work/main
B=.venv/bin/ssl-bench
D=data.root=../shared/data/cifar10-jpeg
while ! grep -q "stage 3 done" runs/logs/reference_3c.log; do
  grep -q "make: \*\*\*" runs/logs/reference_3c.log && { echo "stage 3 failed"; exit 1; }
  sleep 20
done
echo "=== $(date -u +%FT%TZ) 8b: bn_recalibrate at K=100"
$B -m experiment=benchmark profile=cpu $D progress=false \
  task=rotation,jigsaw,relative_position,inpainting,multitask,multitask_all,layerwise,random,supervised_pretrain \
  seed=0,1,2 eval.bn_recalibrate=true 'eval.labels_per_class=[100]' eval.probes.enabled=false \
  leaderboard.path=runs/bn_recalibrate/leaderboard.csv hydra.sweep.dir=runs/bn_recalibrate/multirun || exit 1
echo "=== $(date -u +%FT%TZ) after stage 3 done"
