#!/bin/bash
# Stage 3, restarted (2026-12-02 14:33Z) after the multitask, multitask_all and layerwise jobs
# failed at import (code merged under the running process); finished rows are reused.
cd /work/main
echo "=== $(date -u +%FT%TZ) stage 3 (restart): every method"
make benchmark ARGS=progress=false || exit 1
echo "=== $(date -u +%FT%TZ) stage 3 done"
