# Lease B, call 1 (carry .whl/a): install the small wheels, the reference LM on this card.
source bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 bench/gpu_run.py $OUT/ref ref:batch=1 ref:batch=16 | grep -v "^RESULT"
