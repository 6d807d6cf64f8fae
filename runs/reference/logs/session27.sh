#!/bin/bash
# Session 27 (Zen 3, fp32): supervised_pretrain seeds 1-2 of the reference run.
cd /work/main
echo "== supervised_pretrain fp32 $(date -u +%FT%TZ)"
make benchmark TASKS=supervised_pretrain ARGS="progress=false"
echo "== done $(date -u +%FT%TZ) rc=$?"
