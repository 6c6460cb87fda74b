"""PNG plots of result files, made from the JSON alone so anyone can redraw them."""

from __future__ import annotations

from pathlib import Path

from memit.eval.results import load_result, parse_result_path

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
    from memit.eval.sequential import sequence_label  # here: that module imports the methods

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


def compare_plot(points: list[dict], labels: list[str], dataset: str, out: str | Path, title: str) -> Path:
    """Grouped bars of each metric for runs that differ in one setting (layer band, method, λ …),
    with their 95 % intervals, and the unedited level of the same records as a dashed line."""
    plt = pyplot()
    metrics = METRICS[dataset]
    width = 0.8 / len(points)
    fig, ax = plt.subplots(figsize=(3.6 + 1.6 * len(metrics) * max(1, len(points) / 3), 4))
    for i, (p, label) in enumerate(zip(points, labels)):
        xs = [m + (i - (len(points) - 1) / 2) * width for m in range(len(metrics))]
        vals = [p["edited"][k] for k in metrics]
        cis = [p["edited"].get(k + "_ci95", [v, v]) for k, v in zip(metrics, vals)]
        err = [[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]]
        ax.bar(xs, vals, width, yerr=err, capsize=2, label=label, color=f"C{i}")
    for m, k in enumerate(metrics):
        ax.hlines(points[0]["unedited"][k], m - 0.45, m + 0.45, colors="k", linestyles="--",
                  label="unedited" if m == 0 else None)
    ax.set_xticks(range(len(metrics)), metrics)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    ax.set_title(title, fontsize=9)
    return save(fig, out)


def spectrum_plot(points: list[dict], labels: list[str], out: str | Path) -> Path:
    """Eigenvalues of λC₀ + KKᵀ (left) and of KKᵀ alone (right), largest first, one line per edited
    layer and run: how far the preservation term lifts the directions the new keys leave empty."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p, label, style in zip(points, labels, ["-", "--", ":", "-."]):
        for i, (layer, s) in enumerate(sorted(p["spectra"].items(), key=lambda kv: int(kv[0]))):
            for ax, key in zip(axes, ["eig", "eig_kk"]):
                ev = sorted(s[key], reverse=True)
                ev = [e for e in ev if e > ev[0] * 1e-12]  # KKᵀ: only its range (rank ≤ N), the rest is rounding
                ax.plot(range(1, len(ev) + 1), ev, style, color=f"C{i}", lw=1,
                        label=f"{label}, layer {layer}" if key == "eig" else None)
    for ax, title in zip(axes, ["λC₀ + KKᵀ", "KKᵀ (new keys only), nonzero eigenvalues"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue rank")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("eigenvalue")
    axes[0].legend(fontsize=6, ncol=2)
    return save(fig, out)


def sweep_plot(points: list[dict], xs: list[float], xlabel: str, out: str | Path) -> Path:
    """ES/PS/NS (with 95 % intervals) and perplexity against one setting, e.g. λ; unedited dashed."""
    plt = pyplot()
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    xs, points = [xs[i] for i in order], [points[i] for i in order]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for metric, color in zip(METRICS["counterfact"], ["C0", "C1", "C2"]):
        vals = [p["edited"][metric] for p in points]
        ci = [p["edited"].get(metric + "_ci95", [v, v]) for p, v in zip(points, vals)]
        ax.plot(xs, vals, "o-", color=color, label=metric)
        ax.fill_between(xs, [c[0] for c in ci], [c[1] for c in ci], color=color, alpha=0.15)
        ax.axhline(points[0]["unedited"][metric], color=color, ls="--", alpha=0.6)
    ax2.plot(xs, [p["edited"].get("perplexity") for p in points], "o-", color="C3", label="edited")
    ax2.axhline(points[0]["unedited"].get("perplexity", float("nan")), color="k", ls="--", label="unedited")
    for a in (ax, ax2):
        a.set_xscale("symlog", linthresh=min(x for x in xs if x > 0) if any(x > 0 for x in xs) else 1)
        a.set_xlim(left=0)  # λ ≥ 0: no empty negative half
        a.set_xlabel(xlabel)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax2.set_ylabel("perplexity (wikitext-2 test)")
    ppl = [p["edited"]["perplexity"] for p in points if p["edited"].get("perplexity")]
    if ppl and max(ppl) > 10 * min(ppl):  # λ = 0 can reach thousands: a linear axis would flatten the rest
        ax2.set_yscale("log")
    return save(fig, out)
