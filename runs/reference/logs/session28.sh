#!/bin/bash
# K=400 at 128 passes (budget 1) and 256 (the check) for random init, fp32 on Zen 3.
cd /tmp/bench   # a clone of main at 09e620e^ (dbcbef1) with runs/ copied from in_progress/
P="eval.epochs=128 eval.labels_per_class=[400] eval.probes.enabled=false progress=false"
echo "start $(date -u +%FT%TZ)"
make benchmark TASKS=random ARGS="$P"
echo "base done $(date -u +%FT%TZ)"
make converge CHECK_TASKS=random ARGS="eval.epochs=128 check_labels_per_class=[400] progress=false"
echo "check done $(date -u +%FT%TZ)"
