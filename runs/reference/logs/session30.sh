#!/bin/bash
# K=400 at 128 passes: supervised seed 2 and supervised's check at 256 (3 seeds), then the other
# seven methods (bf16 pretrainings found with pretrain_precision, evaluated in fp32); Zen 3, fp32.
cd /tmp/bench   # a clone of main at 4f9d777 with runs/ copied from in_progress/
P="eval.epochs=128 eval.labels_per_class=[400] eval.probes.enabled=false progress=false precision=fp32"
C="eval.epochs=128 check_labels_per_class=[400] progress=false precision=fp32"
echo "start $(date -u +%FT%TZ)"
make benchmark TASKS=supervised ARGS="$P"
echo "supervised base done $(date -u +%FT%TZ)"
make converge CHECK_TASKS=supervised ARGS="$C"
echo "supervised check done $(date -u +%FT%TZ)"
make benchmark TASKS=jigsaw,relative_position,inpainting,multitask,multitask_all,layerwise ARGS="$P pretrain_precision=bf16"
echo "six pretext methods done $(date -u +%FT%TZ)"
make benchmark TASKS=supervised_pretrain ARGS="$P pretrain_precision=fp32"
echo "supervised_pretrain done $(date -u +%FT%TZ)"
