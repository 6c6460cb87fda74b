"""Time of each phase of one MEMIT edit on SmolLM2 (statistics, targets, keys, solve, diagnostics),
with the target vectors taken from the cache when an earlier run stored them, so that the phases
after the optimisation are what is measured. Run it with ``PYTHONPATH`` at another checkout's
``src`` to time that commit's code on the same requests; the file is named by the commit.

    python benchmarks/edit_phases.py --n 100 --repeat 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import memit
from memit.eval.run import machine
from memit.hparams import preset_for
from memit.models.loading import cache_dir

DATA = Path(__file__).resolve().parents[2] / "shared/data/counterfact/easyedit/counterfact-edit.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeat", type=int, default=2, help="edits timed one after another (the model is restored)")
    ap.add_argument("--out", default="benchmarks/results/speed")
    args = ap.parse_args()
    model, tok = memit.load_model("smollm2-135m")
    hp = preset_for("smollm2-135m")
    cases = memit.load_cases(args.data, n=args.n)
    runs = [memit.edit(model, tok, [c.request for c in cases], hp, apply=False, progress=True,
                       checkpoint=cache_dir() / "targets") for _ in range(args.repeat)]
    delta = runs[-1]
    where = machine()
    res = {"n": args.n, "data": args.data, "machine": where, "timings_s": [d.meta["timings"] for d in runs],
           "resid_after": delta.meta["resid_after"],
           "delta_rel_norm": [info["delta_rel_norm"] for info in delta.meta["layers_info"]]}
    out = Path(args.out) / f"edit_phases_n{args.n}_{(where['commit'] or 'nogit')[:8]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    for t in res["timings_s"]:
        print(" ".join(f"{k} {v:.1f} s" for k, v in t.items()))
    print(f"→ {out}")


if __name__ == "__main__":
    main()
