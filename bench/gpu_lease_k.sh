# Lease K (H100): the state of this stop: depformer kernel with per-block attention, fused
# kernels on a bounded grid, Mimi's transformer through the fused kernels.
# Call 1 carries .whl/a (`source bench/gpu_setup.sh` only); call 2 carries .whl/b and .cache/head
# (rolekit at 8b61588, the start of this stop) and runs `bash bench/gpu_lease_k.sh check`; call 3
# `... pairs`.
source bench/gpu_setup.sh
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="python3 bench/gpu_run.py"
F="^DEPCHECK|^FUSEDCHECK|^PROF|^PHASES|^\| eng|^\| ref|Error|error"
if [ "$1" = check ]; then
  timeout 500 $R $OUT/a fusedcheck:rows=1 depcheck:quants=bf16+q4,batches=1 mimicheck: $Q 2>&1 | grep -E "$F|MIMICHECK" | grep -E "mimi|MIMI|DEPCHECK|\| eng|ok=False|rror"
fi
if [ "$1" = pairs ]; then
  timeout 100 $OLD $R $OUT/b $Q 2>&1 | grep -E "$F"
  timeout 150 $R $OUT/c $Q $E ${E/batch=1/batch=16} 2>&1 | grep -E "$F"
  timeout 100 $OLD $R $OUT/d $Q 2>&1 | grep -E "$F"
  timeout 100 $R $OUT/e $Q phases:quant=q4,steps=40 2>&1 | grep -E "$F"
  timeout 100 $R $OUT/f prof:quant=q4,batch=1 2>&1 | grep -E "^PROF"
fi
