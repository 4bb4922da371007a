# Lease I (H100): the depformer-frame kernel (rolekit.lm.depformer_cuda).
# Call 1 carries .whl/a (`source bench/gpu_setup.sh` only); call 2 carries .whl/b and .cache/head
# (rolekit at 8b61588, before the kernel) and runs `bash bench/gpu_lease_i.sh check`; call 3 runs
# `bash bench/gpu_lease_i.sh pairs` on the still-warm machine.
source bench/gpu_setup.sh
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="python3 bench/gpu_run.py"
F="^DEPCHECK|^PROF|^\| eng|Error|error"
if [ "$1" = check ]; then
  timeout 480 $R $OUT/a depcheck:quants=bf16+q4 $Q 2>&1 | grep -E "$F"
fi
if [ "$1" = pairs ]; then
  timeout 120 $R $OUT/b ${Q/engine:/engine:dep=0,} 2>&1 | grep -E "$F"
  timeout 120 $OLD $R $OUT/c $Q 2>&1 | grep -E "$F"
  timeout 150 $R $OUT/d $Q $E 2>&1 | grep -E "$F"
  timeout 120 $R $OUT/e prof:quant=q4,batch=1 2>&1 | grep -E "$F" | head -30
fi
