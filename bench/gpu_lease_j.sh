# Lease J (H100): q4/q8 dequantization without int-to-float conversions (rolekit.nn.fused's
# dot_quant, shared with the depformer kernel) and L2 prefetch in the depformer kernel.
# Call 1 carries .whl/a (`source bench/gpu_setup.sh` only); call 2 carries .whl/b and .cache/head
# (rolekit at 8b61588) and runs `bash bench/gpu_lease_j.sh check`; call 3 `... pairs`.
source bench/gpu_setup.sh
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="python3 bench/gpu_run.py"
F="^DEPCHECK|^FUSEDCHECK|^PROF|^PHASES|^\| |Error|error"
if [ "$1" = check ]; then
  timeout 500 $R $OUT/a fusedcheck: depcheck:quants=bf16+q4 $Q 2>&1 | grep -E "$F" | grep -v "^| job"
fi
if [ "$1" = pairs ]; then
  timeout 100 $OLD $R $OUT/b $Q 2>&1 | grep -E "^\| eng"
  timeout 150 $R $OUT/c $Q $E ${Q/batch=1/batch=16} 2>&1 | grep -E "^\| eng"
  timeout 100 $OLD $R $OUT/d $Q 2>&1 | grep -E "^\| eng"
  timeout 100 $R $OUT/e $Q phases:quant=q4,steps=40 2>&1 | grep -E "^PHASES|^\| eng"
  timeout 100 $R $OUT/f prof:quant=q4,batch=1 2>&1 | grep -E "^PROF" 
fi
if [ "$1" = ref ]; then
  timeout 300 $R $OUT/g ref:batch=1 ref:batch=16 2>&1 | grep -E "^\| ref|Error"
fi
