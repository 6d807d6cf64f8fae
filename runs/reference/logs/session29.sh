#!/bin/bash
# K=400 at 128 passes: rotation (bf16 pretraining, fp32 evaluator) base + check, then supervised
# base + check; fp32 on Zen 3 (AMD EPYC family 25 model 1).
cd /tmp/bench   # a clone of main at d4b967d with runs/ copied from in_progress/
P="eval.epochs=128 eval.labels_per_class=[400] eval.probes.enabled=false progress=false precision=fp32"
C="eval.epochs=128 check_labels_per_class=[400] progress=false precision=fp32"
echo "start $(date -u +%FT%TZ)"
make benchmark TASKS=rotation ARGS="$P pretrain_precision=bf16"
echo "rotation base done $(date -u +%FT%TZ)"
make converge CHECK_TASKS=rotation ARGS="$C pretrain_precision=bf16"
echo "rotation check done $(date -u +%FT%TZ)"
make benchmark TASKS=supervised ARGS="$P"
echo "supervised base done $(date -u +%FT%TZ)"
make converge CHECK_TASKS=supervised ARGS="$C"
echo "supervised check done $(date -u +%FT%TZ)"
