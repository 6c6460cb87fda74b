"""Where the time of one whole edit goes, model by model: each model's default preset on the same
counterfact-edit requests, with statistics cached and target vectors computed afresh (no
checkpoint), through every verification round. Gemma's vocabulary is 5.3 times SmolLM2's, so
its target loop pays more for the logits; this shows how much of the whole that is.

    python benchmarks/phases_by_model.py --n 100 [--models smollm2-135m gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import memit
from memit.eval.run import machine
from memit.hparams import default_hparams
from memit.methods import run
from memit.models.arch import get_arch, n_layers
from memit.stopping import stop_summary

DATA = Path(__file__).resolve().parents[2] / "shared/data/counterfact/easyedit/counterfact-edit.json"


def one(name: str, n: int, data: str) -> dict:
    model, tok = memit.load_model(name)
    arch = get_arch(model)
    hp = default_hparams(model.config.model_type, n_layers(model, arch))
    requests = [c.request for c in memit.load_cases(data, n=n)]
    run("memit", model, tok, requests[:1], hp, progress=False).revert(model)  # statistics, warm-up
    t = time.perf_counter()
    delta = run("memit", model, tok, requests, hp, progress=True)
    wall = time.perf_counter() - t
    delta.revert(model)
    reqs = delta.meta["requests"]
    cfg = model.config
    return {"model": name, "layers": hp.layers, "hparams": delta.meta["hparams"],
            "vocab": cfg.vocab_size, "blocks": cfg.num_hidden_layers, "d_model": cfg.hidden_size,
            "d_ff": cfg.intermediate_size, "post_mlp_norm": arch.post_mlp_norm is not None,
            "wall_s": wall, "phases_s": delta.meta["timings"],
            "steps_per_fact": stop_summary(reqs)["mean_steps"],
            "rounds": [{k: r[k] for k in ("round", "n_edited", "held_after")} for r in delta.meta["rounds"]],
            "verification": delta.meta["verification"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--out", default="benchmarks/results/speed")
    args = ap.parse_args()
    res = {"n": args.n, "data": args.data, "machine": machine(),
           "models": [one(m, args.n, args.data) for m in args.models]}
    out = Path(args.out) / f"phases_by_model_n{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    for m in res["models"]:
        print(f"{m['model']}: {m['wall_s']:.1f} s; " + ", ".join(f"{k} {v:.1f} s" for k, v in m["phases_s"].items())
              + f"; {m['steps_per_fact']:.1f} steps/fact")
    print(f"→ {out}")


if __name__ == "__main__":
    main()
