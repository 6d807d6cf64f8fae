#!/bin/bash
# K=400 at 128 passes, the rest: multitask, multitask_all, layerwise (bf16 pretrainings found with
# pretrain_precision, evaluated in fp32), then supervised_pretrain (fp32 pretraining); Zen 3, fp32.
# Finished cells (jigsaw, relative_position, inpainting, session 30) are skipped by the sweep.
cd /tmp/bench   # a clone of main at 4f9d777 with runs/ copied from in_progress/
P="eval.epochs=128 eval.labels_per_class=[400] eval.probes.enabled=false progress=false precision=fp32"
echo "start $(date -u +%FT%TZ)"
make benchmark TASKS=multitask,multitask_all,layerwise ARGS="$P pretrain_precision=bf16"
echo "multitask, multitask_all, layerwise done $(date -u +%FT%TZ)"
make benchmark TASKS=supervised_pretrain ARGS="$P pretrain_precision=fp32"
echo "supervised_pretrain done $(date -u +%FT%TZ)"
