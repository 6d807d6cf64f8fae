#!/bin/bash
# The cpu reference run, in the order that answers the convergence question first; the
# patch tasks (jigsaw, relative position, multitasks) come last, by a separate command.
cd /work/main
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }
stamp start
stamp "stage 1: random, rotation, supervised"
make benchmark TASKS=random,rotation,supervised ARGS=progress=false || exit 1
stamp "stage 2: convergence check"
make converge ARGS=progress=false || exit 1
stamp "stage 3a: inpainting, layerwise, supervised_pretrain"
make benchmark TASKS=inpainting,layerwise,supervised_pretrain ARGS=progress=false || exit 1
stamp "stage 3a done"
