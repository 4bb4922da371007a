# Lease T (H100 / H200): the temporal transformer's step as one kernel (rolekit.lm.temporal_cuda).
# Call 1 carries .whl/a (`source bench/gpu_setup.sh` only); call 2 carries .whl/b and .cache/head
# (rolekit at b6f184d, the start of this work) and runs `bash bench/gpu_lease_t.sh final`.
# Tunings were compared with
# `python3 bench/gpu_run.py OUT "tempcheck:quant=q4,batch=1,steps=2,reps=10,tunes=uq=8-pairs=0"`.
source bench/gpu_setup.sh
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="python3 bench/gpu_run.py"
if [ "$1" = final ]; then
  # the kernel against its contract (32 layers; 4 layers, wrapped ring, 3 rows), Kyutai's LMGen
  # (CUDA graphs, bf16) and the step in the same process; then the code before, in its own process
  timeout 470 $R $OUT/a tempcheck:quant=q4,batch=1,steps=3,reps=5 \
    tempcheck:quant=q4,batch=3,layers=4,context=64,prefill=70,steps=6,reps=5 \
    ref:batch=1 $Q $E ${E/batch=1/batch=16} $Q,temporal=0 2>&1 | grep -E "^TEMPCHECK|^\| eng|^\| ref|Error|error" \
    | sed "s/'hidden_vs_ops[^}]*'kernel_ms'/'kernel_ms'/g"
  timeout 110 $OLD $R $OUT/b $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = prof ]; then
  timeout 250 $R $OUT/f prof:quant=q4,batch=1 phases:quant=q4,steps=40 2>&1 | grep -E "^PROF|^PHASES"
fi
