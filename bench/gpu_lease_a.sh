# Lease A, call 1 (carry .whl/a): the reference on this card, CUDA graphs and torch.compile.
source bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
python3 bench/gpu_run.py $OUT/ref ref:batch=1 ref:batch=16 bw
env -u NO_TORCH_COMPILE timeout 240 python3 bench/gpu_run.py $OUT/refc ref:batch=1,torch_compile=1,steps=60
