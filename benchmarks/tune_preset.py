"""Choose the SmolLM2 preset's λ and layer band by measurement on counterfact-train only.

Target vectors depend only on the last edited layer, so they are computed once per last layer
and reused across λ and band width. Every configuration is scored on the same records with the
paper's ES/PS/NS; the unedited scores are reported beside. Writes one JSON (resumable: finished
configurations are kept and skipped on a rerun) and a PNG.

    python benchmarks/tune_preset.py --n 50 --out benchmarks/results/preset
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import memit
from memit.eval.metrics import counterfact_case_scores, counterfact_summary
from memit.eval.run import machine
from memit.hparams import preset_for

DATA = Path(__file__).resolve().parents[2] / "shared/data/counterfact/easyedit/counterfact-train.json"
LAMBDAS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
BANDS = [[1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8], [6, 7, 8, 9, 10, 11], [9, 10, 11, 12, 13, 14]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default="benchmarks/results/preset")
    ap.add_argument("--stats-tokens", type=int, default=100_000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"tune_n{args.n}.json"
    results = json.loads(file.read_text()) if file.exists() else {"runs": {}}
    model, tok = memit.load_model("smollm2-135m")
    cases = memit.load_cases(args.data, n=args.n)
    reqs = [c.request for c in cases]
    if "unedited" not in results:
        results["unedited"] = counterfact_summary(counterfact_case_scores(model, tok, cases))
    results.update(n=args.n, data=str(args.data), machine=machine(), stats_tokens=args.stats_tokens)
    configs = [([3, 4, 5, 6, 7, 8], lam) for lam in LAMBDAS] + [(b, 1.0) for b in BANDS if b != [3, 4, 5, 6, 7, 8]]
    targets_by_last: dict[int, object] = {}
    for layers, lam in configs:
        key = f"L{layers[0]}-{layers[-1]}_lam{lam}"
        if key in results["runs"]:
            continue
        hp = preset_for("smollm2-135m")
        hp.layers, hp.lam_per_dff, hp.stats_tokens = layers, lam, args.stats_tokens
        t = time.perf_counter()
        delta = memit.edit(model, tok, reqs, hp, targets=targets_by_last.get(layers[-1]))
        targets_by_last[layers[-1]] = delta.aux["targets"]
        post = counterfact_summary(counterfact_case_scores(model, tok, cases))
        delta.revert(model)
        results["runs"][key] = {"layers": layers, "lam_per_dff": lam, "lambda": delta.meta["lambda"],
                                "edited": post, "wall_s": time.perf_counter() - t,
                                "layers_info": delta.meta["layers_info"]}
        print(key, {k: round(post[k], 1) for k in ("ES", "PS", "NS", "Score")}, flush=True)
        file.write_text(json.dumps(results, indent=1))
    plot(results, out / f"tune_n{args.n}.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"].values()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    lam_runs = sorted((r for r in runs if r["layers"] == [3, 4, 5, 6, 7, 8]), key=lambda r: r["lam_per_dff"])
    band_runs = sorted((r for r in runs if r["lam_per_dff"] == 1.0), key=lambda r: r["layers"][0])
    for metric, c in zip(["ES", "PS", "NS"], ["C0", "C1", "C2"]):
        axes[0].plot([r["lam_per_dff"] for r in lam_runs], [r["edited"][metric] for r in lam_runs], "o-",
                     color=c, label=metric)
        axes[0].axhline(results["unedited"][metric], color=c, ls="--", alpha=0.6)
        axes[1].plot([f"{r['layers'][0]}-{r['layers'][-1]}" for r in band_runs],
                     [r["edited"][metric] for r in band_runs], "o-", color=c, label=metric)
        axes[1].axhline(results["unedited"][metric], color=c, ls="--", alpha=0.6)
    axes[0].set_xscale("log")
    lams = [r["lam_per_dff"] for r in lam_runs]
    axes[0].set_xticks(lams, [f"{x:g}" for x in lams])
    axes[0].minorticks_off()
    axes[0].set_xlabel("λ per d_ff (layers 3-8)")
    axes[1].set_xlabel("layer band (λ = 1 per d_ff)")
    for ax in axes:
        ax.set_ylabel("%")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"SmolLM2-135M, counterfact-train first {results['n']} (dashed: unedited)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
