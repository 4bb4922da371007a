# Lease L (H100 / H200, this stop): Mimi's encode and decode steps as one kernel each
# (rolekit.codec.mimi_cuda) and q4/q8 dequantization by exponent-bit construction in
# rolekit.nn.fused's dot_quant. Call 1 carries .whl/a (`source bench/gpu_setup.sh` only); call 2
# carries .whl/b and .cache/head (rolekit at 879de9f, the start of this work) and runs
# `bash bench/gpu_lease_l.sh check`; then `... pairs`, `... ref`, `... prof` (one call each).
source bench/gpu_setup.sh
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="python3 bench/gpu_run.py"
if [ "$1" = check ]; then  # Mimi kernels vs MLX ops (codes, PCM, per-stage us), then the step
  timeout 400 $R $OUT/a mimicheck: mimicheck:batch=4,frames=12 $Q 2>&1 \
    | grep -E "^MIMICHECK|^\| eng|Error|error" | sed 's/.slowest.: \[[^]]*\]//g'
  timeout 150 $OLD $R $OUT/b $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = pairs ]; then  # before / after in alternating processes
  timeout 200 $R $OUT/c $Q $E ${E/batch=1/batch=16} 2>&1 | grep -E "^\| eng"
  timeout 150 $OLD $R $OUT/d $Q 2>&1 | grep -E "^\| eng"
  timeout 150 $R $OUT/e ${E/batch=1/batch=16},mimi=0 $Q,mimi=0 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = ref ]; then  # Kyutai's LMGen (CUDA graphs, bf16) next to the step, same machine
  timeout 300 $R $OUT/g ref:batch=1 $Q 2>&1 | grep -E "^\| ref|^\| eng|Error"
fi
if [ "$1" = final ]; then  # the final code (async encode / LM in Engine.step) vs 879de9f, and LMGen
  timeout 150 $R $OUT/h $Q 2>&1 | grep -E "^\| eng"
  timeout 150 $OLD $R $OUT/i $Q 2>&1 | grep -E "^\| eng"
  timeout 300 $R $OUT/j ref:batch=1 $Q $E 2>&1 | grep -E "^\| ref|^\| eng|Error"
  timeout 150 $OLD $R $OUT/k $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = prof ]; then
  timeout 250 $R $OUT/f prof:quant=q4,batch=1 phases:quant=q4,steps=40 2>&1 | grep -E "^PROF|^PHASES"
fi
