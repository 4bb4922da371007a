# Lease B, call 2 (carry .whl/b, .cache/base = the previous commit's rolekit): kernel counts of the
# new code, then old vs new engine steps in alternating processes, the reference last.
source bench/gpu_setup.sh
E=engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/base"
python3 bench/gpu_run.py $OUT/p prof:quant=bf16,batch=1 2>&1 | grep -v "^RESULT"
$OLD python3 bench/gpu_run.py $OUT/o1 $E | grep "^| eng"
python3 bench/gpu_run.py $OUT/n1 $E engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8 | grep "^| eng"
$OLD python3 bench/gpu_run.py $OUT/o2 $E engine:quant=bf16,batch=16,compiled=1,steps=40,warmup=5 | grep "^| eng"
python3 bench/gpu_run.py $OUT/n2 $E engine:quant=bf16,batch=16,compiled=1,steps=40,warmup=5 engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8,qmv=0 ref:batch=1 | grep -E "^\| (eng|ref)"
MLX_USE_CUDA_GRAPHS=0 python3 bench/gpu_run.py $OUT/ng $E | grep "^| eng"
