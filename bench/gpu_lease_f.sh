# Lease F, call 2 (carry .whl/b and .cache/head = rolekit at 4ad7600, before the fused kernels):
# check rolekit.nn.fused on the GPU, then whole steps: new (fused on), fused=0, and 4ad7600, in
# alternating processes; q4; kernel profile with the fused kernels.
# (The kernels measured here are the first version; lease G measured the final ones.)
source bench/gpu_setup.sh
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="timeout 240 python3 bench/gpu_run.py"
$R $OUT/c fusedcheck: 2>&1 | grep -E "^FUSED|Error|error" | head -80
$R $OUT/n1 $E 2>&1 | grep -E "^\| eng|Error"
$OLD $R $OUT/o1 $E | grep "^| eng"
$R $OUT/f1 ${E/engine:/engine:fused=0,} | grep "^| eng"
$R $OUT/n2 $E $Q 2>&1 | grep -E "^\| eng|Error"
$OLD $R $OUT/o2 $E $Q | grep "^| eng"
$R $OUT/p prof:quant=bf16,batch=1 2>&1 | grep -E "^PROF|^   x" | head -40
