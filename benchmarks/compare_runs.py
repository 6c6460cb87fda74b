"""How far two `memit eval` results of the same point are apart, record by record.

Two runs of one point (the same records and settings) can differ for two reasons: the code
changed, or the floating-point order did (another CPU, another thread count). The rates alone
cannot tell them apart; the per-record log-probabilities can. A code change moves them by
whatever it changed; a different summation order moves them at rounding level in one edit, and
a sequential method (ROME edits one request on the model the previous ones left) carries
that on, so the gap grows with the number of edits before the score.

    python benchmarks/compare_runs.py A.json B.json

prints the rates of both, the largest and the median |Δ| of the edited per-record NLLs, that
largest gap per record, and the records whose rewrite verdict (target_new beats target_true)
differs, with both runs' NLLs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from memit.eval.generated import KINDS  # CounterFact's prompt kinds, as the per-record scores hold them


def record_gaps(a: list[dict], b: list[dict]) -> list[float]:
    """Per record, the largest |Δ NLL| over its prompts and both targets."""
    if [x["case_id"] for x in a] != [y["case_id"] for y in b]:
        raise SystemExit("the two results are not on the same records")
    return [max(abs(u[t] - v[t]) for k in KINDS for u, v in zip(x[k], y[k]) for t in ("new", "true"))
            for x, y in zip(a, b)]


def flips(a: list[dict], b: list[dict]) -> list[dict]:
    """Records whose rewrite verdict differs between the two runs."""
    out = []
    for x, y in zip(a, b):
        u, v = x["rewrite"][0], y["rewrite"][0]
        if (u["new"] < u["true"]) != (v["new"] < v["true"]):
            out.append({"case_id": x["case_id"], "a": u, "b": v})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    ra, rb = (json.loads(p.read_text()) for p in (args.a, args.b))
    for name, r in (("a", ra), ("b", rb)):
        m = r["machine"]
        rates = ", ".join(f"{k} {r['edited'][k]:.1f}" for k in ("ES", "PS", "NS", "GE") if k in r["edited"])
        print(f"{name}: {rates}  ({m['cpu']}, {m['threads']} thread(s), {(m['commit'] or 'unknown')[:7]})")
    gaps = record_gaps(ra["per_case"]["edited"], rb["per_case"]["edited"])
    print(f"edited per-record NLL, largest |Δ| per record: median {statistics.median(gaps):.1e}, max {max(gaps):.1e}")
    print("  by record, in edit order:", " ".join(f"{g:.1e}" for g in gaps))
    for f in flips(ra["per_case"]["edited"], rb["per_case"]["edited"]):
        print(f"  rewrite verdict differs, case {f['case_id']}: a new {f['a']['new']:.3f} true {f['a']['true']:.3f}, "
              f"b new {f['b']['new']:.3f} true {f['b']['true']:.3f}")


if __name__ == "__main__":
    main()
