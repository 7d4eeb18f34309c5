#!/usr/bin/env bash
cd /work/main
for r in 1 2 3; do
 for v in old new; do
  BIN=target/lmgen-main-native; [ $v = new ] && BIN=target/native/release/lmgen
  t=$(RAYON_NUM_THREADS=2 $BIN bench --model target/bench-checkpoints/${SHAPE}-f32 --dtype f32 --threads 2 --prefill 16 --batch 1 --prompt-len 128 --new-tokens 32 --reps 2 --warmup 1 --json /tmp/ab.json >/dev/null 2>&1; python3 -c "import json;r=json.load(open('/tmp/ab.json'));print('%.2f %.1f'%(r['decode'][0]['tok_s'], r['bandwidth_gb_s']))")
  echo "$SHAPE r$r $v $t"
 done
done
