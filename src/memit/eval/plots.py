"""PNG plots of result files, made from the JSON alone so anyone can redraw them."""

from __future__ import annotations

import json
from pathlib import Path

METRICS = {"counterfact": ["ES", "PS", "NS"], "zsre": ["efficacy", "paraphrase", "specificity"]}


def scaling_plot(results_dir: str | Path, dataset: str, method: str = "memit") -> Path | None:
    """Each metric against N (log scale), edited solid and unedited dashed, with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(Path(results_dir).glob(f"{dataset}_{method}_n*.json"))
    points = sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["n"])
    if not points:
        return None
    ns = [p["n"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric, color in zip(METRICS[dataset], ["C0", "C1", "C2"]):
        post = [p["edited"][metric] for p in points]
        lo = [p["edited"].get(metric + "_ci95", [v, v])[0] for p, v in zip(points, post)]
        hi = [p["edited"].get(metric + "_ci95", [v, v])[1] for p, v in zip(points, post)]
        ax.plot(ns, post, "o-", color=color, label=f"{metric} (MEMIT)")
        ax.fill_between(ns, lo, hi, color=color, alpha=0.15)
        ax.plot(ns, [p["unedited"][metric] for p in points], "--", color=color, alpha=0.7, label=f"{metric} unedited")
    ax.set_xscale("log")
    ax.set_xlabel("facts edited in one batch (N)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(f"{dataset}: {method} on {points[-1]['hparams'].get('layers')}")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    out = Path(results_dir) / f"{dataset}_{method}_scaling.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
