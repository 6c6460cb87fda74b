"""The results pages' own figures: bars of runs that differ in one setting, spectra, and sweeps.

They draw committed result files for docs/results.md and docs/review.md and are no part of what
a user imports; the plots ``memit eval`` draws itself stay in memit.eval.plots, whose ``pyplot``
and ``save`` these use. A page's blocks name them (``page.Figure``) and ``page.build`` draws them,
after the text: computing a page never writes a PNG.
"""

from __future__ import annotations

from pathlib import Path

from memit.eval import plots


def compare_plot(points: list[dict], labels: list[str], dataset: str, out: str | Path, title: str) -> Path:
    """Grouped bars of each metric for runs that differ in one setting (layer band, method, λ …),
    with their 95 % intervals, and the unedited level of the same records as a dashed line."""
    plt = plots.pyplot()
    metrics = plots.METRICS[dataset]
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
    return plots.save(fig, out)


def spectrum_plot(points: list[dict], labels: list[str], out: str | Path) -> Path:
    """Eigenvalues of λC₀ + KKᵀ (left) and of KKᵀ alone (right), largest first, one line per edited
    layer and run: how far the preservation term lifts the directions the new keys leave empty."""
    plt = plots.pyplot()
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
    return plots.save(fig, out)


def sweep_plot(points: list[dict], xs: list[float], xlabel: str, out: str | Path) -> Path:
    """ES/PS/NS (with 95 % intervals) and perplexity against one setting, e.g. λ; unedited dashed."""
    plt = plots.pyplot()
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    xs, points = [xs[i] for i in order], [points[i] for i in order]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for metric, color in zip(plots.METRICS["counterfact"], ["C0", "C1", "C2"]):
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
    return plots.save(fig, out)
