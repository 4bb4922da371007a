# Lease H, call 2 (carry .whl/b and .cache/head = rolekit at 4ad7600): where the step's wall time
# goes (phases), the pipelined offline rate, then 4ad7600's plain step in the same lease; the PTX
# cache comes back as gpu_cache.tgz.
# (`pipelined=1` timed Engine.submit, removed after this lease: no gain; see bench/RESULTS.md.)
source bench/gpu_setup.sh
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="timeout 200 python3 bench/gpu_run.py"
$R $OUT/a phases:quant=bf16,steps=40 $E ${E/engine:/engine:pipelined=1,} 2>&1 | grep -E "^PHASES|^\| eng|Error"
$R $OUT/b $Q ${Q/engine:/engine:pipelined=1,} phases:quant=q4,steps=40 2>&1 | grep -E "^PHASES|^\| eng|Error"
$OLD timeout 100 python3 bench/gpu_run.py $OUT/o $E | grep "^| eng"
tar czf $OUT/gpu_cache.tgz -C .cache gpu; ls -la $OUT/gpu_cache.tgz
