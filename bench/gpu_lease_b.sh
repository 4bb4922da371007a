# Lease A, call 2 (carry .whl/b): kernel profile, rolekit's q4 kernel, MLX graph settings.
source bench/gpu_setup.sh
python3 -c "import mlx.core as mx; print(mx.default_device(), mx.cuda.is_available())"
python3 bench/gpu_run.py $OUT/p prof:quant=bf16,batch=1 qmv: 2>&1 | grep -v "^RESULT"
python3 bench/gpu_run.py $OUT/q engine:quant=q4,batch=1,compiled=1,steps=40,warmup=8,qmv=1 engine:quant=q4,batch=1,compiled=1,steps=40,warmup=8,qmv=0 prof:quant=q4,batch=1 2>&1 | grep -v "^RESULT"
MLX_MAX_OPS_PER_BUFFER=5000 MLX_MAX_MB_PER_BUFFER=100000 python3 bench/gpu_run.py $OUT/g engine:quant=bf16,batch=1,compiled=1,steps=40,warmup=8 | grep -v "^RESULT"
MLX_USE_CUDA_GRAPHS=0 python3 bench/gpu_run.py $OUT/n engine:quant=bf16,batch=1,compiled=1,steps=40,warmup=8 | grep -v "^RESULT"
tar czf $OUT/gpu_cache.tgz -C .cache gpu; ls -la $OUT/gpu_cache.tgz
