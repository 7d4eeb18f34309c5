#!/usr/bin/env bash
# batch-1 decode under each prefetch distance, alternated
cd /work/main
BIN=${BIN:-target/native/release/lmgen}
for r in $(seq ${ROUNDS:-3}); do
 for dt in ${DTYPES:-f32}; do
  for d in ${DISTS:-4096 0 1024 16384}; do
    t=$(LMGEN_ROW_PREFETCH=$d RAYON_NUM_THREADS=2 $BIN bench --model target/bench-checkpoints/${SHAPE:-qwen2.5-0.5b}-f32 --dtype $dt --threads 2 --prefill 16 --batch 1 --prompt-len 128 --new-tokens ${NEW:-32} --reps 2 --warmup 1 --json /tmp/pf.json >/dev/null 2>&1; python3 -c "import json;r=json.load(open('/tmp/pf.json'));print('%.2f %.1f'%(r['decode'][0]['tok_s'], r['bandwidth_gb_s']))")
    echo "r$r $dt dist=$d $t"
  done
 done
done
