#!/bin/bash
# Stage 3b of the cpu reference run: every method (the finished ones are skipped), after stage 3a.
cd /work/main
while ! grep -q "stage 3a done" runs/logs/reference.log; do
  grep -q "Error\|make: \*\*\*" runs/logs/reference.log && { echo "reference.sh failed"; exit 1; }
  sleep 20
done
echo "=== $(date -u +%FT%TZ) stage 3b: every method"
make benchmark ARGS=progress=false || exit 1
echo "=== $(date -u +%FT%TZ) stage 3b done"
