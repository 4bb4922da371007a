#!/usr/bin/env bash
# The product-path GPU rows of bench/RESULTS.md (issue 17), as stages:
#   source bench/gpu_setup.sh; bash bench/gpu_product.sh STAGE...
# Stages: write cold cold_second engine_b1 engine_b1_ab engine_b16 engine_b32 respond respond_warm test16 test64 test64_q4
# kernel_path gpu_tests probe launch qmm qmm_split engine_qmm mimi_parts token_ring; diagnostics: matmul (benchmarks/matmul.py), cold_diag (benchmarks/cold_start.py), gap
# (benchmarks/batch_gap.py), harness_ab (the old harness
# at commit $AB, unpacked in .ab/: git archive $AB rolekit | tar -x -C .ab).
# Every stage writes its JSON under $OUT (command timings as <name>.time.json: wall s, peak RSS kB).
# MODEL=tiny runs the same commands on the tiny model (a rehearsal on a CPU machine).
set -u
M=${MODEL:-random-7b}
STEPS=${STEPS:-200}
export ROLEKIT_CACHE=${ROLEKIT_CACHE:-/tmp/rk}
OUT=${OUT:?set OUT}
# the product's own kernel caches ($ROLEKIT_CACHE/kernels), not the harness's
unset MLX_PTX_CACHE_DIR CUDA_CACHE_PATH
RK=(python3 -m rolekit)

timed() {  # timed NAME CMD...: wall time and peak RSS of one command
  local name=$1
  shift
  local t0=$SECONDS
  /usr/bin/time -f '{"wall_s": %e, "max_rss_kb": %M}' -o "$OUT/$name.time.json" "$@"
  echo "== $name rc=$? $(cat "$OUT/$name.time.json" 2>/dev/null) ($((SECONDS - t0)) s)" >&2
}

audio60() {  # 60 s of on/off tone at 24 kHz: user audio for respond and the suite
  [ -f /tmp/u60.wav ] && return
  python3 -c "import numpy as np, soundfile as sf; t=np.arange(60*24000)/24000; \
sf.write('/tmp/u60.wav', (0.2*np.sin(2*np.pi*180*t)*(np.sin(2*np.pi*0.3*t)>0)).astype('float32'), 24000)"
}

suite() {  # suite N NAME: N scenarios of the 60 s audio, `rolekit test --jobs N`, runs and audio seconds
  local n=$1 name=$2 dir=/tmp/s$1
  audio60
  mkdir -p "$dir" && cp /tmp/u60.wav "$dir/"
  for i in $(seq -w 0 $((n - 1))); do
    printf 'name: s%s\npersona: refund-desk\nseed: %d\nlead_in: 1.0\ntail: 2.0\nuser:\n  - audio: u60.wav\n' \
      "$i" "$((10#$i))" >"$dir/s$i.yaml"
  done
  timed "$name" "${RK[@]}" test "$dir" --jobs "$n" -m "$M" --quant "${TEST_QUANT:-bf16}" --no-transcribe \
    --out "/tmp/$name"
  python3 -c "import json,sys; rows=[json.loads(l) for l in open('/tmp/$name/results.jsonl')]; \
print(json.dumps({'runs': len(rows), 'errors': sum(r.get('status') == 'error' for r in rows), 'audio_s': sum(r.get('duration_s') or 0 for r in rows)}))" >"$OUT/$name.json"
  cat "$OUT/$name.json"
}

for stage in "$@"; do
  case $stage in
    write)  # the full-size random model, NVIDIA layout (random-7b only)
      [ "$M" = random-7b ] && timed random7b_write "${RK[@]}" model random-7b
      ;;
    cold)  # first process on a fresh machine (q4 conversion on first load + kernel JIT), then a second
      timed cold_first "${RK[@]}" warmup -m "$M" --quant q4 --json-out "$OUT/cold_first.json" -q
      # when each kernel cache file was written (which kernels compiled, in what order, how long)
      find "$ROLEKIT_CACHE/kernels" -type f -printf '%T@ %s %P\n' | sort -n >"$OUT/cold_files.txt"
      timed cold_second "${RK[@]}" warmup -m "$M" --quant q4 --json-out "$OUT/cold_second.json" -q
      ;;
    cold_second)  # a later process only (the caches of an earlier q4 run on this machine)
      timed cold_second "${RK[@]}" warmup -m "$M" --quant q4 --json-out "$OUT/cold_second.json" -q
      ;;
    engine_b1)  # batch 1 q4 + LMGen with CUDA graphs and with torch.compile (own processes)
      timed engine_q4_b1 "${RK[@]}" bench engine -m "$M" --quant q4 --batch 1 --steps "$STEPS" \
        --json-out "$OUT/engine_q4_b1.json"
      ;;
    engine_b16)  # 16 at once: bf16 and q4 (no reference: the goal compares the two)
      timed engine_bf16_b16 "${RK[@]}" bench engine -m "$M" --quant bf16 --batch 16 --steps 100 \
        --no-reference --json-out "$OUT/engine_bf16_b16.json"
      timed engine_q4_b16 "${RK[@]}" bench engine -m "$M" --quant q4 --batch 16 --steps 100 \
        --no-reference --json-out "$OUT/engine_q4_b16.json"
      ;;
    engine_b32)
      timed engine_bf16_b32 "${RK[@]}" bench engine -m "$M" --quant bf16 --batch 32 --steps 50 \
        --no-reference --json-out "$OUT/engine_bf16_b32.json"
      ;;
    respond)  # 60 s of audio through `rolekit respond` (summary JSON on stdout)
      audio60
      timed respond60 "${RK[@]}" respond -m "$M" --quant q4 --input /tmp/u60.wav --output /tmp/a60.wav \
        --prompt "You enjoy having a good conversation." -q >"$OUT/respond60.json"
      ;;
    respond_warm)  # the same again: a later process, kernel caches warm
      audio60
      timed respond60_warm "${RK[@]}" respond -m "$M" --quant q4 --input /tmp/u60.wav --output /tmp/a60.wav \
        --prompt "You enjoy having a good conversation." -q >"$OUT/respond60_warm.json"
      ;;
    test16)  # 16 scenarios of 60 s, --jobs 16 (no TTS, no Whisper): wall time against audio time
      suite 16 test16_bf16
      ;;
    test64)  # 64 scenarios of 60 s at once (--jobs 64), bf16: within the 80 ms frame? (the suite
      # cuts the batch where 64 rings of 2048 slots and the bf16 weights do not fit: its note says)
      suite 64 test64
      ;;
    test64_q4)  # the same in q4 (5.4 GB of weights: 64 rings of 2048 slots fit an 80 GB card)
      TEST_QUANT=q4 suite 64 test64_q4
      ;;
    launch)  # host time of one kernel launch: from MLX's kernel cache against precompiled (benchmarks/launch.py)
      timed launch python3 -c "from benchmarks.launch import run; run(out='$OUT/launch.jsonl')"
      ;;
    probe)  # rolekit's kernel cache on this GPU: compile, launch from MLX's cache, read back (fast)
      timed probe python3 -m pytest -q -p no:cacheprovider -m gpu tests/nn/test_cubins_gpu.py --junitxml "$OUT/probe.xml"
      ;;
    qmm)  # the tensor-core q4 kernel against MLX's product, then q4 at batch 16 without and with it
      timed qmm_test python3 -m pytest -q -p no:cacheprovider -m gpu tests/nn/test_qmm.py --junitxml "$OUT/qmm_test.xml"
      ;;
    qmm_split)  # q4 at batch 16: nn.qmm's products split over k (the default, + MLX's sum) or whole
      for s in 1 0; do
        timed "engine_q4_b16_split$s" "${RK[@]}" bench engine -m "$M" --quant q4 --batch 16 --steps 100 \
          --no-reference --kernels "qmm_split=$s" --json-out "$OUT/engine_q4_b16_split$s.json"
      done
      ;;
    mimi_parts)  # batch 1 q4: Mimi's step kernels in one piece, then in 4 linked parts (the default)
      for p in 1 4; do
        timed "engine_q4_b1_mimi$p" "${RK[@]}" bench engine -m "$M" --quant q4 --batch 1 --steps "$STEPS" \
          --no-reference --kernels "mimi_parts=$p" --json-out "$OUT/engine_q4_b1_mimi$p.json"
      done
      ;;
    token_ring)  # batch 1 q4: the token ring's bookkeeping as MLX ops, then as rolekit's two kernels (the default)
      for r in 0 1; do
        timed "engine_q4_b1_ring$r" "${RK[@]}" bench engine -m "$M" --quant q4 --batch 1 --steps "$STEPS" \
          --no-reference --kernels "token_ring=$r" --json-out "$OUT/engine_q4_b1_ring$r.json"
      done
      ;;
    engine_qmm)
      for q in 0 1; do
        timed "engine_q4_b16_qmm$q" "${RK[@]}" bench engine -m "$M" --quant q4 --batch 16 --steps 60 \
          --no-reference --kernels "qmm=$q" --json-out "$OUT/engine_q4_b16_qmm$q.json"
      done
      ;;
    gpu_tests)  # every `gpu`-marked test file but the 7B kernel path (its own stage); only those
      # files are collected, so the dependencies of the rest of the suite need not be installed
      timed gpu_tests python3 -m pytest -q -p no:cacheprovider -m gpu \
        $(grep -rl 'mark.gpu' tests --include='test_*.py' | grep -v test_gpu_kernel_path | sort) \
        --junitxml "$OUT/gpu_tests.xml"
      ;;
    gap)  # the batch-16 product step against fresh / filled engines and the harness model, one process
      timed gap python3 -c "from benchmarks.batch_gap import run; run('$M', '${GAP_QUANT:-bf16}', ${GAP_BATCH:-16}, out='$OUT/gap.jsonl')"
      ;;
    matmul)  # the temporal layer's products at 1, 16, 32, 64 rows: bf16, MLX q4, rolekit's q4 kernels
      timed matmul python3 -c "import json; from benchmarks.matmul import bench_matmul; \
print(json.dumps(bench_matmul(batches=(1, 16, 32, 64), kernel=True)))" >"$OUT/matmul.json"
      ;;
    cold_diag)  # where a process's prefill -> first step goes, phase by phase (benchmarks/cold_start.py)
      timed cold_diag python3 -c "from benchmarks.cold_start import run; run('$M', 'q4', out='$OUT/cold_diag.jsonl')"
      ;;
    harness_ab)  # the old harness (.ab/rolekit) at batch 16, bf16, its own random model (run from
      # .ab/: `python -m` puts the working folder first on sys.path)
      (cd .ab && timed harness_ab env PYTHONPATH="/tmp/site:$PWD" python3 -m rolekit bench engine --size full \
        --quant bf16 --batch 16 --compiled --no-reference --json >"$OUT/harness_ab.json")
      ;;
    engine_b1_ab)  # batch 1 q4 without the reference: the code at $AB (unpacked in .ab/), then this code
      (cd .ab && timed engine_q4_b1_ab env PYTHONPATH="/tmp/site:$PWD" ROLEKIT_CACHE="$ROLEKIT_CACHE" python3 -m rolekit \
        bench engine -m "$M" --quant q4 --batch 1 --steps "$STEPS" --no-reference --json-out "$OUT/engine_q4_b1_ab.json")
      timed engine_q4_b1_noref "${RK[@]}" bench engine -m "$M" --quant q4 --batch 1 --steps "$STEPS" \
        --no-reference --json-out "$OUT/engine_q4_b1_noref.json"
      ;;
    kernel_path)  # kernel path vs op path on random-7b, teacher-forced
      timed kernel_path python3 -m pytest -q -s -p no:cacheprovider -m gpu tests/engine/test_gpu_kernel_path.py \
        --junitxml "$OUT/kernel_path.xml"
      ;;
    *) echo "unknown stage $stage" >&2 ;;
  esac
done
