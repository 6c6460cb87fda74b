#!/usr/bin/env bash
# The one-batch N = 1,000 runs that two CPU cores cannot finish beside each other in a session, side
# by side on one GPU: ROME request after request (#6 a; about 2 h on both cores alone), the
# a-priori-band question's oracle band 0–5 and the λ sweep (the review's points 2 and 3), and the
# fine-tuning baselines with their settings tuned on counterfact-train (benchmarks/hparams). Each is
# the `memit eval` command that docs/results.md and docs/review.md print, with --device cuda and the
# data carried as exact prefixes (gpu_common.sh).
# A copier keeps every finished result file in OUT (named by its folder); ROME, the longest, resumes
# from its stored target vectors when the command is given again on the same warm machine.
#
#   bash benchmarks/gpu_batch.sh pack DIR_A DIR_B              # here
#   bash benchmarks/gpu_batch.sh run DIR_A DIR_B OUT [SECONDS [JOB ...]]   # on the GPU machine
#
# JOB: rome, oracle, lambda, ft, ft-w (default: oracle lambda ft-w; ROME and FT-L at N = 1,000 ran on
# CPU and their results are committed).
set -u
source "$(dirname "$0")/gpu_common.sh"
mode=$1 A=$2 B=$3
N=${N:-1000}  # overridden only to try the script on CPU
if [ "$mode" = pack ]; then pack "$A" "$B"; exit; fi

OUT=$4 LIMIT=${5:-560}
shift $(( $# < 5 ? $# : 5 ))
jobs_wanted=${*:-oracle lambda ft-w}
start=$(date +%s)
work=${WORK:-/tmp/memit-batch}
mkdir -p "$work" "$OUT"
log="$OUT/gpu_batch.log"
setup "$A" "$B" "$log" || exit 1
echo "model ready after $(elapsed) s" >> "$log"
base=(eval --dataset counterfact --data "$B/counterfact-edit.first2000.json" --n "$N" --device "$DEVICE" --quiet)
ppl=(--perplexity "$B/wiki.test.first200k.raw")

memit() { echo "$(date +%T) memit $*" >> "$log"; $PY -m memit.cli "$@" >> "$log" 2>&1; }
job() {
  case $1 in
    rome) memit "${base[@]}" --method rome --out "$work/rome" ;;
    oracle) memit "${base[@]}" --layers 0,1,2,3,4,5 --out "$work/oracle" ;;
    lambda)  # the first stores the target vectors (λ does not change them); the other three share them
      memit "${base[@]}" "${ppl[@]}" --lambda 100 --out "$work/lambda_100"
      for lam in 1000 15000 100000; do memit "${base[@]}" "${ppl[@]}" --lambda $lam --out "$work/lambda_$lam" & done
      wait ;;
    ft) memit "${base[@]}" --method ft --hparams benchmarks/hparams/smollm2-135m_ft-l.json --out "$work/tuned_ft" ;;
    ft-w) [ -f benchmarks/hparams/smollm2-135m_ft-w.json ] &&
            memit "${base[@]}" --method ft-w --hparams benchmarks/hparams/smollm2-135m_ft-w.json --out "$work/tuned_ft-w" ;;
  esac
}
collect() {  # every result file, named by its folder: rome_counterfact_rome_n1000.json, …
  for f in "$work"/*/counterfact_*.json; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")_$(basename "$f")"; done
}
pids=()
for j in $jobs_wanted; do
  timeout $(( $(left) - 10 )) bash -c "$(declare -f memit job); $(declare -p base ppl work log PY); job $j" &
  pids+=($!)
done
(while sleep 10; do collect; done) &
copier=$!
wait "${pids[@]}"
kill $copier
collect
echo "done after $(elapsed) s" >> "$log"
