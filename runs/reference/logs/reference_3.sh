#!/bin/bash
# Stage 3 of the cpu reference run (session of 2026-12-02 afternoon): every method; the finished
# rows and pretrainings restored from runs/reference/in_progress are reused, not redone.
cd /work/main
echo "=== $(date -u +%FT%TZ) stage 3: every method (resumed)"
make benchmark ARGS=progress=false || exit 1
echo "=== $(date -u +%FT%TZ) stage 3 done"
