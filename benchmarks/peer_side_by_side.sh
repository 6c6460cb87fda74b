#!/usr/bin/env bash
# memit beside the paper's own code (kmeng01/memit, patched only to run here: ../shared/peers/memit_official),
# one after the other on the same N facts, the same model and the same machine, in one run: the speed
# ratio the README may claim, and the quality it comes with. Both edited models are scored by the
# peer's own scorer (cf_score.py, written apart from memit's metrics), on the same records.
#
# Usage: bash benchmarks/peer_side_by_side.sh N OUT [MEMIT_ARGS...]
#   e.g. bash benchmarks/peer_side_by_side.sh 20 /tmp/peer20            (memit's default preset)
#        bash benchmarks/peer_side_by_side.sh 20 /tmp/peer20p --stop paper --rounds 1
# Records: the first N of ../shared/data/counterfact/counterfact_fullschema_union.json (ROME schema).
# Needs `fetch github:kmeng01/memit` (the mirror run.sh looks for) and the project's .venv.
# Writes OUT/peer/ (run.sh's files), OUT/memit/ (edited model, report.json, score_edited.json) and
# OUT/side_by_side.json: both edit times without the statistics pass (cached beforehand for both),
# the ratio, and ES/PS/NS of both, with the machine and commit. Nothing else should run meanwhile.
set -euo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 N OUT [MEMIT_ARGS...]" >&2; exit 2; fi
N="$1"; OUT="$2"; shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEER="$ROOT/../shared/peers/memit_official"
REQ="$ROOT/../shared/data/counterfact/counterfact_fullschema_union.json"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || { echo "$0: no .venv (run make venv)" >&2; exit 1; }
[ -d "$PEER" ] || { echo "$0: no $PEER" >&2; exit 1; }
mkdir -p "$OUT"; OUT="$(realpath "$OUT")"
cd "$ROOT"

# Statistics first, for both, so that neither edit time includes them: the peer computes (and
# caches) its own on its first run, so run it once on 1 fact; memit's come from `memit stats`.
if [ ! -f "$OUT/.peer_stats_done" ]; then
  bash "$PEER/run.sh" "$REQ" 1 "$OUT/peer_warm" >/dev/null
  touch "$OUT/.peer_stats_done"
fi
.venv/bin/memit stats --model smollm2-135m "$@" >/dev/null

bash "$PEER/run.sh" "$REQ" "$N" "$OUT/peer"
rm -rf "$OUT/memit"
start=$(date +%s.%N)
.venv/bin/memit edit --model smollm2-135m --requests "$REQ" --n "$N" --out "$OUT/memit" --quiet "$@"
end=$(date +%s.%N)
"$PY" "$PEER/cf_score.py" "$OUT/memit" "$REQ" --n "$N" --out "$OUT/memit/score_edited.json"

"$PY" - "$OUT" "$N" "$start" "$end" "$*" <<'EOF'
import json, sys
from pathlib import Path
from memit.eval.run import machine
out, n, start, end, args = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
peer_t = json.loads((out / "peer" / "timings.json").read_text())
memit_meta = json.loads((out / "memit" / "memit_edit.json").read_text())
pick = lambda s: {k: s.get(k) for k in ("ES", "PS", "NS", "Score")}
peer_e, peer_b = (json.loads((out / "peer" / f).read_text()) for f in ("score_edited.json", "score_base.json"))
ours = json.loads((out / "memit" / "score_edited.json").read_text())
summary = lambda s: s.get("summary", s)
peer_s = peer_t["total_edit_excl_stats_s"]
memit_s = end - start  # the whole `memit edit` process: start-up, loading, edit, verification, saving
result = {"n": n, "records": "counterfact_fullschema_union.json, first N", "memit_args": args,
          "peer_edit_excl_stats_s": peer_s, "memit_process_s": memit_s, "speedup": peer_s / memit_s,
          "memit_timings": memit_meta["timings"], "memit_verification": memit_meta.get("verification"),
          "unedited": pick(summary(peer_b)), "peer": pick(summary(peer_e)), "memit": pick(summary(ours)),
          "machine": machine()}
(out / "side_by_side.json").write_text(json.dumps(result, indent=1))
print(json.dumps({k: result[k] for k in ("speedup", "peer_edit_excl_stats_s", "memit_process_s", "unedited", "peer", "memit")}))
EOF
