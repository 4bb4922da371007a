# Lease C, call 2 (carry .whl/b, .cache/base = rolekit at 0009dfb, the start of this session):
# kernel counts, old vs new whole steps in alternating processes, late frames, MLX graph size.
source bench/gpu_setup.sh
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/base"
R="timeout 150 python3 bench/gpu_run.py"
$R $OUT/p prof:quant=bf16,batch=1 2>&1 | grep -E "^PROF|^   x"
$OLD $R $OUT/o1 $E | grep "^| eng"
$R $OUT/n1 $E engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8 | grep "^| eng"
$OLD $R $OUT/o2 $E engine:quant=bf16,batch=16,compiled=1,steps=40,warmup=5 | grep "^| eng"
$R $OUT/n2 $E engine:quant=bf16,batch=16,compiled=1,steps=40,warmup=5 engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=140,start=3100 | grep "^| eng"
MLX_MAX_OPS_PER_BUFFER=200 $R $OUT/g $E | grep "^| eng"
$R $OUT/r ref:batch=1 $E | grep -E "^\| (eng|ref)"
