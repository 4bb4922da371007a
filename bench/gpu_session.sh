#!/usr/bin/env bash
# One lent GPU call's worth of bench/gpu_product.sh stages with a time limit each, so that a call
# that runs out of time still returns the stages before (their JSON is under $OUT as they finish):
#   source bench/gpu_setup.sh; bash bench/gpu_session.sh SECONDS:STAGE...
# e.g. 60:write 400:cold 120:respond. Prints each stage's JSON summary lines at the end.
set -u
for item in "$@"; do
  limit=${item%%:*}
  stage=${item#*:}
  timeout "$limit" bash bench/gpu_product.sh "$stage" || echo "== $stage stopped (rc=$?, limit ${limit} s)" >&2
done
for f in "$OUT"/*.json "$OUT"/*.jsonl; do
  [ -f "$f" ] && { echo "## $(basename "$f")"; head -c 3000 "$f"; echo; }
done
