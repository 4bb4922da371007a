# Lease U (H100): the temporal kernel's weights through per-warp cp.async rings (nn.grid.rows_async),
# pos / start / sampling settings read once per block. Call 1 carries .whl/a (`source
# bench/gpu_setup.sh` only); later calls carry .whl/b and .cache/head (rolekit at f3b5670, the start
# of this work; c2b1a43 for mode `embed`) and run `bash bench/gpu_lease_u.sh MODE`.
source bench/gpu_setup.sh
Q="engine:quant=q4,batch=1,compiled=1,steps=60,warmup=8"
E16="engine:quant=bf16,batch=16,compiled=1,steps=60,warmup=8"
OLD="env PYTHONPATH=/tmp/site:$PWD/.cache/head"
R="python3 bench/gpu_run.py"
F="^TEMPCHECK|^\| eng|^\| ref|Error|error"
if [ "$1" = check ]; then
  # the kernel against its contract (32 layers; 4 layers, wrapped ring, 3 rows), the register path
  # (stages=0) and the attention probes in the same process; then the engine with both
  timeout 400 $R $OUT/a "tempcheck:quant=q4,batch=1,steps=2,reps=5,tunes=stages=0-probe=1-stages=0/probe=1" \
    tempcheck:quant=q4,batch=3,layers=4,context=64,prefill=70,steps=6,reps=5 \
    $Q $Q,tune=stages=0 2>&1 | grep -E "$F" | sed "s/'hidden_vs_ops[^}]*'kernel_ms'/'kernel_ms'/g"
fi
if [ "$1" = final ]; then
  timeout 330 $R $OUT/b ref:batch=1 $Q $Q,hold=1 $Q,cache=0 2>&1 | grep -E "$F"
  timeout 110 $OLD $R $OUT/c $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = tune ]; then
  # 512 / 384 threads a block (launch bounds: 128 / 170 registers a thread), rings on and off
  timeout 300 $R $OUT/d "tempcheck:quant=q4,batch=1,steps=2,reps=5,tunes=threads=512-threads=384-threads=512/stages=0-threads=512/probe=1" \
    2>&1 | grep -E "$F" | sed "s/'hidden_vs_ops[^}]*'kernel_ms'/'kernel_ms'/g"
  timeout 250 $R $OUT/e $Q $Q,tune=threads=512 $Q $Q,tune=threads=512 2>&1 | grep -E "$F"
fi
if [ "$1" = final1 ]; then
  # final code: the kernel against its contract (32 layers, 1 row; 4 layers, wrapped ring, 3 and 4
  # rows), 256 threads in the same process; the depformer kernel; LMGen and the step, same process
  timeout 330 $R $OUT/g "tempcheck:quant=q4,batch=1,steps=2,reps=5,tunes=threads=256" \
    tempcheck:quant=q4,batch=3,layers=4,context=64,prefill=70,steps=6,reps=5 \
    tempcheck:quant=q4,batch=4,layers=4,context=64,prefill=70,steps=6,reps=5 \
    "depcheck:quants=q4+bf16" 2>&1 | grep -E "$F|^DEPCHECK" | sed "s/'hidden_vs_ops[^}]*'kernel_ms'/'kernel_ms'/g"
  timeout 200 $R $OUT/h ref:batch=1 $Q $E16 2>&1 | grep -E "$F"
fi
if [ "$1" = final2 ]; then
  # LMGen and the step in one process (and the depformer kernel with 512 threads), the code before
  timeout 330 $R $OUT/m ref:batch=1 $Q $Q,dep_threads=512 $Q 2>&1 | grep -E "$F"
  timeout 120 $OLD $R $OUT/n $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = final3 ]; then
  # the depformer kernel's block alternating, the code before, the step in its own process
  timeout 200 $R $OUT/o $Q,dep_threads=512 $Q $Q,dep_threads=512 $Q 2>&1 | grep -E "$F"
  timeout 100 $OLD $R $OUT/p $Q 2>&1 | grep -E "^\| eng"
  timeout 100 $R $OUT/q $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = embed ]; then
  # the step-embedding kernel against the MLX ops (bit-exact); the code before (c2b1a43, carried
  # in .cache/head) and the step, each in its own process
  timeout 200 $R $OUT/r "embedcheck:batches=1+3+16,times=1+5" 2>&1 | grep -E "$F|^EMBEDCHECK"
  timeout 110 $OLD $R $OUT/s $Q 2>&1 | grep -E "^\| eng"
  timeout 110 $R $OUT/t $Q 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = embed2 ]; then
  # the step with and without the embedding kernel, alternating in one process
  timeout 125 $R $OUT/u $Q $Q,embed=0 $Q $Q,embed=0 2>&1 | grep -E "^\| eng"
fi
if [ "$1" = head ]; then
  # the final commit: LMGen and the step in one process, the step in two more, then the profile
  timeout 300 $R $OUT/v ref:batch=1 $Q $Q 2>&1 | grep -E "$F"
  timeout 100 $R $OUT/w $Q 2>&1 | grep -E "^\| eng"
  timeout 100 $R $OUT/x $Q 2>&1 | grep -E "^\| eng"
  timeout 150 $R $OUT/f prof:quant=q4,batch=1 phases:quant=q4,steps=40 2>&1 | grep -E "^PROF|^PHASES"
fi
if [ "$1" = prof ]; then
  timeout 250 $R $OUT/f prof:quant=q4,batch=1 phases:quant=q4,steps=40 2>&1 | grep -E "^PROF|^PHASES"
fi
