"""Unrelated knowledge after k sequential edits, measured afterwards from the edit journals.

The review's point 5 asks, after 2,000 sequential edits, for zsRE ``loc`` accuracy beside the known
facts: questions from Natural Questions that no CounterFact edit touches, scored by token-level
teacher-forced top-1 accuracy of the answer (as zsRE specificity is). The sequential runs did not
score it as they went, but each journal holds every step's ΔW, so the edited model of any step
is rebuilt exactly (the deltas are applied in order, as the run applied them) and scored here.
Resumable: a (method, step) already in the output file is not scored again.

    python benchmarks/seq_loc.py --dir benchmarks/results/sequential --every 5 [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import memit
from memit.eval.metrics import bootstrap_ci, zsre_case_scores
from memit.eval.plots import pyplot, save
from memit.eval.results import sequence_label
from memit.eval.run import machine
from memit.eval.sequential import journaled_runs

ZSRE = Path(__file__).resolve().parents[2] / "shared/data/zsre/zsre_mend_eval_portability_gpt4.json"


def loc_accuracy(model, tok, cases) -> dict:
    per = zsre_case_scores(model, tok, cases, kinds=("specificity",))
    vals = [sum(c["specificity"]) / len(c["specificity"]) for c in per if c.get("specificity")]
    lo, hi = bootstrap_ci(vals)
    return {"loc": 100 * sum(vals) / len(vals), "loc_ci95": [100 * lo, 100 * hi], "questions": len(vals)}


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in result["runs"].items():
        pts = sorted(points.values(), key=lambda p: p["edits"])
        xs = [p["edits"] for p in pts]
        ax.plot(xs, [p["loc"] for p in pts], "o-", label=method, ms=3)
        ax.fill_between(xs, [p["loc_ci95"][0] for p in pts], [p["loc_ci95"][1] for p in pts], alpha=0.15)
    ax.set_xlabel("sequential CounterFact edits so far")
    ax.set_ylabel("zsRE loc accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", nargs="+", default=["benchmarks/results/sequential"],
                    help="where the runs and their journals are (several: runs made in different checkouts)")
    ap.add_argument("--out", help="where to write zsre_loc.json/.png (default: the first --dir)")
    ap.add_argument("--zsre", default=str(ZSRE), help="zsRE records; their loc questions are the probe")
    ap.add_argument("--n", type=int, default=1000, help="first N records of --zsre")
    ap.add_argument("--every", type=int, default=5, help="score every this many steps (and the last scored one)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the rebuilt models run")
    args = ap.parse_args()
    out = Path(args.out or args.dir[0])
    file = out / "zsre_loc.json"
    result = json.loads(file.read_text()) if file.exists() else {"zsre": args.zsre, "n": args.n, "runs": {}}
    if (result["zsre"], result["n"]) != (args.zsre, args.n):
        raise SystemExit(f"{file} was made with another probe ({result['zsre']}, n {result['n']}); use another --out")
    model, tok = memit.load_model("smollm2-135m", device=args.device)
    cases = memit.load_cases(args.zsre, n=args.n, check_batch=False)
    base = None
    for journal, run, scored in journaled_runs(args.dir):
        wanted = sorted({k for k in range(0, scored + 1, args.every)} | {scored})
        done = result["runs"].setdefault(sequence_label(run), {})
        base = base or done.get("0")  # the unedited model: the same for every run
        for k in journal.walk(model, max(wanted)):
            if k not in wanted or str(k) in done:
                continue
            done[str(k)] = base if k == 0 and base else {
                "step": k, "edits": sum(s["n_requests"] for s in journal.steps[:k]),
                **loc_accuracy(model, tok, cases), "machine": machine()}
            base = base or done.get("0")
            print(f"{sequence_label(run)} step {k} ({done[str(k)]['edits']} edits): zsRE loc {done[str(k)]['loc']:.1f}",
                  flush=True)
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(json.dumps(result, indent=1))
    plot(result, out / "zsre_loc.png")


if __name__ == "__main__":
    main()
