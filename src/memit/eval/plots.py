"""PNG plots of result files, made from the JSON alone so anyone can redraw them."""

from __future__ import annotations

from pathlib import Path

from memit.eval.results import load_result, parse_result_path, sequence_label

METRICS = {"counterfact": ["ES", "PS", "NS"], "zsre": ["efficacy", "paraphrase", "specificity"]}


def pyplot():
    """matplotlib's pyplot on the file-only backend: plots are written, never shown, and work
    without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str | Path) -> Path:
    """Write ``fig`` as a PNG and free it (figures left open pile up over a long run)."""
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    pyplot().close(fig)
    return Path(out)


def scaling_plot(results_dir: str | Path, dataset: str, method: str = "memit") -> Path | None:
    """Each metric against N (log scale), edited solid and unedited dashed, with 95 % intervals."""
    plt = pyplot()
    names = {f: parse_result_path(f) for f in Path(results_dir).glob("*.json")}
    files = sorted(f for f, m in names.items() if m and m.dataset == dataset and m.method == method and m.plain)
    points = sorted((load_result(f) for f in files), key=lambda r: r["n"])
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
    return save(fig, out)


def sequence_plot(results_dir: str | Path, dataset: str) -> Path | None:
    """ES/PS/NS (zsRE: the accuracies) of all edits so far against the number of edits, one colour
    per method, and beside them perplexity and the known facts still known where a run measured them."""
    plt = pyplot()
    runs = [load_result(f) for f in sorted(Path(results_dir).glob("*.json"))
            if (m := parse_result_path(f)) and m.dataset == dataset and m.batch_size]
    runs = [r for r in runs if len(r.get("points", [])) > 1]
    if not runs:
        return None
    # Beside the scores: perplexity and known facts kept, where a run measured them.
    extra = [(key, label) for key, label in (("perplexity", "perplexity (held-out text)"),
                                             ("retention", "% of known facts still known"))
             if any(key in p for r in runs for p in r["points"])]
    fig, axes = plt.subplots(1, 1 + len(extra), figsize=(6 + 5 * len(extra), 4), squeeze=False)
    ax = axes[0][0]
    for r, color in zip(runs, [f"C{i}" for i in range(10)]):
        xs = [p["edits"] for p in r["points"]]
        for metric, style in zip(METRICS[dataset], ["-", "--", ":"]):
            ax.plot(xs, [p[metric] for p in r["points"]], style, color=color, marker="o", ms=3,
                    label=f"{sequence_label(r)} (batches of {r['batch_size']}): {metric}")
        for (key, _), side in zip(extra, axes[0][1:]):
            ys = [p[key]["kept"] if key == "retention" and key in p else p.get(key) for p in r["points"]]
            side.plot(xs, ys, "o-", color=color, label=sequence_label(r))
    ax.set_xlabel("edits so far")
    ax.set_ylabel("% (all edits so far)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    ax.set_title(f"{dataset}: sequential editing")
    for (key, label), side in zip(extra, axes[0][1:]):
        side.set_xlabel("edits so far")
        side.set_ylabel(label)
        if key == "perplexity":  # a collapsing run spans orders of magnitude; the others must stay readable
            side.set_yscale("log")
        side.grid(alpha=0.3)
        side.legend(fontsize=7)
    out = Path(results_dir) / f"{dataset}_sequential.png"
    return save(fig, out)
