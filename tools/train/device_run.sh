#!/usr/bin/env bash
# The one device-machine run that made models/tiny-austen and models/tiny-austen-draft:
# trains the main model, then the draft model distilled from it, then records transformers'
# golden outputs on both.
#
#   bash tools/train/device_run.sh DIR OUTDIR MAIN_MINUTES DRAFT_MINUTES
#
# DIR holds corpus/ (extract_corpus.py), tokenizer/ (train_tokenizer.py) and tools/ (this
# folder); OUTDIR receives the logs, shipped_model.json and models.tar.* (the two checkpoint
# directories, split into pieces of 15 MiB).
set -euo pipefail
dir=$1 out=$2 main_min=$3 draft_min=$4
export PYTHONUNBUFFERED=1
python3 -c 'import torch, transformers, tokenizers as t; print(torch.__version__, transformers.__version__, t.__version__, torch.cuda.get_device_name())'
common=(--corpus "$dir/corpus" --tokenizer "$dir/tokenizer")
python3 "$dir/tools/train.py" --preset main "${common[@]}" --out "$dir/models/tiny-austen" \
  --minutes "$main_min" 2>&1 | tee "$out/main.log"
python3 "$dir/tools/train.py" --preset draft "${common[@]}" --out "$dir/models/tiny-austen-draft" \
  --minutes "$draft_min" --teacher "$dir/models/tiny-austen" 2>&1 | tee "$out/draft.log"
tar -C "$dir" -cf - models | split -b 15m - "$out/models.tar."
python3 "$dir/tools/golden.py" "$dir/models/tiny-austen" "$dir/models/tiny-austen-draft" \
  "$out/shipped_model.json" 2>&1 | tee "$out/golden.log"
