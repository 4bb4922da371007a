# Lease G, call 2 (carry .whl/b and .cache/head = rolekit at 4ad7600): kernel checks on the GPU
# (fused block kernels, masked ring attention), then whole steps in alternating processes:
# new (kernels on), 4ad7600, kernels off; q4; batch 16; kernel profile; the PTX cache comes back.
source bench/gpu_setup.sh
E="engine:quant=bf16,batch=1,compiled=1,steps=60,warmup=8"
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
B16="engine:quant=bf16,batch=16,compiled=1,steps=40,warmup=5"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="timeout 240 python3 bench/gpu_run.py"
$R $OUT/c fusedcheck: ringcheck: 2>&1 | grep -E "^FUSED|^RING|Error|error" | grep -v "ok=True" | head -40
echo "checks done"; python3 -c "import json; r=json.load(open('$OUT/c/results.json')); print([x.get('all_ok') for x in r])"
$R $OUT/n1 $E $Q 2>&1 | grep -E "^\| eng|Error"
$OLD $R $OUT/o1 $E $Q | grep "^| eng"
$R $OUT/f1 ${E/engine:/engine:fused=0,ring=0,} | grep "^| eng"
$R $OUT/n2 $E $Q $B16 2>&1 | grep -E "^\| eng|Error"
$OLD $R $OUT/o2 $E $B16 | grep "^| eng"
$R $OUT/p prof:quant=bf16,batch=1 prof:quant=q4,batch=1 2>&1 | grep -E "^PROF|^   x" | head -60
tar czf $OUT/gpu_cache.tgz -C .cache gpu; ls -la $OUT/gpu_cache.tgz
