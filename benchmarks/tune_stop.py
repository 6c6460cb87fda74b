"""Choose how SmolLM2's target vectors stop, how many verification rounds an edit gets, and
whether a norm term on ΔW helps, by measurement on counterfact-train only.

The paper's rule stops a fact when its loss falls below 0.05, which on SmolLM2 almost never
happens: nearly every fact runs all 25 steps and sits at the norm clamp, and those large targets
are what damages the model at scale. The margin rule stops each fact once its target tokens are
top-1 by a margin on every prompt row; verification then re-edits the facts that do not hold,
and a ridge term λ_I·I bounds the update. Each configuration edits one batch of the first N
train facts and reports ES/PS/NS/Score, perplexity on wikitext-2 *validation*, known facts still
known, steps per fact, rounds, and time per phase. Resumable: one JSON, finished configurations
are skipped on a rerun.

    python benchmarks/tune_stop.py --n 100 --out benchmarks/results/stop_tuning
"""

from __future__ import annotations

from pathlib import Path

import sweep
from pages.sweeps import stop_table

from memit.eval.plots import pyplot, save
from memit.hparams import preset_for
from memit.models.loading import cache_dir

FIVE = preset_for("smollm2-135m-paper").prefixes  # the sweep's configurations name their prefixes explicitly
CONFIGS: sweep.Configs = {
    "paper": ("memit", {"stop": "paper", "rounds": 1, "prefixes": FIVE}),
    **{f"margin{m:g}": ("memit", {"stop": "margin", "stop_margin": m, "rounds": 1, "prefixes": FIVE})
       for m in (0.0, 1.0, 2.0, 3.0)},
    "margin2_rounds3": ("memit", {"stop": "margin", "stop_margin": 2.0, "rounds": 3, "prefixes": FIVE}),
    "margin3_rounds3": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE}),
    "margin2_rounds3_ridge0.1": ("memit", {"stop": "margin", "stop_margin": 2.0, "rounds": 3, "ridge": 0.1,
                                           "prefixes": FIVE}),
    "margin2_rounds3_ridge0.01": ("memit", {"stop": "margin", "stop_margin": 2.0, "rounds": 3, "ridge": 0.01,
                                            "prefixes": FIVE}),
    # fewer rows per step (two of the five prefixes), and a larger first step
    "margin2_rounds3_2prefixes": ("memit", {"stop": "margin", "stop_margin": 2.0, "rounds": 3, "prefixes": FIVE[:2]}),
    "margin3_rounds3_2prefixes": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE[:2]}),
    "margin2_rounds3_lr1": ("memit", {"stop": "margin", "stop_margin": 2.0, "rounds": 3, "v_lr": 1.0,
                                      "prefixes": FIVE}),
    # the damage levers at scale, on the default: a heavier preservation term, a larger ridge term
    **{f"margin3_rounds3_2prefixes_lam{lam:g}": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                          "prefixes": FIVE[:2], "lam_per_dff": lam}) for lam in (2.0, 4.0)},
    "margin3_rounds3_2prefixes_ridge1": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                   "prefixes": FIVE[:2], "ridge": 1.0}),
    # both damage levers together, for N = 1,000 (where the default keeps too few known facts)
    **{f"margin3_rounds3_2prefixes_ridge1_lam{lam:g}": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                                 "prefixes": FIVE[:2], "ridge": 1.0, "lam_per_dff": lam})
       for lam in (2.0, 4.0)},
    # fewer steps: δ starts with one normalised gradient step, to a share of the clamp
    **{f"margin3_rounds3_2prefixes_ridge1_gradinit{s:g}": ("memit", {
        "stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE[:2], "ridge": 1.0, "v_init": "gradient",
        "v_init_scale": s}) for s in (0.5, 1.0)},
    # cheaper steps on the default: one prefix (three rows a fact, not four), or a step twice as large
    "margin3_rounds3_1prefix_ridge1": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                 "prefixes": FIVE[:1], "ridge": 1.0}),
    "margin3_rounds3_2prefixes_ridge1_lr1": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                       "prefixes": FIVE[:2], "ridge": 1.0, "v_lr": 1.0}),
    # the doubled step with a heavier ridge term, to hold ‖ΔW‖ where the default has it (round-1
    # targets shared with ..._lr1: the ridge term does not change them)
    "margin3_rounds3_2prefixes_ridge1.5_lr1": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                         "prefixes": FIVE[:2], "ridge": 1.5, "v_lr": 1.0}),
    # the same, with a middle round that checks only what it edited: what the faster default could be
    "margin3_rounds3_2prefixes_ridge1.5_lr1_midcheck": ("memit", {
        "stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE[:2], "ridge": 1.5, "v_lr": 1.0,
        "middle_check": "edited"}),
    # the change spread over more layers below the same last one (its target vectors are shared)
    **{f"margin3_rounds3_2prefixes_ridge1_band{first}_8": ("memit", {
        "stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE[:2], "ridge": 1.0,
        "layers": list(range(first, 9))}) for first in (1, 2)},
    # C₀ from ten times the text, of Wikipedia (the paper's source) instead of the bundled WikiText
    # excerpt: the preservation term is what protects the rest of the model at scale
    "margin3_rounds3_2prefixes_ridge1_wiki1m": ("memit", {
        "stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE[:2], "ridge": 1.0,
        "stats_corpus": str(sweep.SHARED / "wikipedia_en"), "stats_tokens": 1_000_000}),
    # a cheaper verification: a round between the first and the last checks only what it edited
    "margin3_rounds3_2prefixes_ridge1_midcheck": ("memit", {"stop": "margin", "stop_margin": 3.0, "rounds": 3,
                                                            "prefixes": FIVE[:2], "ridge": 1.0,
                                                            "middle_check": "edited"}),
    # δ capped at a share of the typical residual norm of the block (the same for every fact), not of
    # each fact's own ‖h‖; subjects' ‖h‖ run about 10 % above the typical norm on SmolLM2
    **{f"margin3_rounds3_2prefixes_ridge1_typical{c:g}": ("memit", {
        "stop": "margin", "stop_margin": 3.0, "rounds": 3, "prefixes": FIVE[:2], "ridge": 1.0, "clamp_ref": "typical",
        "clamp_norm_factor": c}) for c in (0.6, 0.85)},
}
KEYS = ("ES", "PS", "NS", "Score")


def plot(results: dict, path: Path) -> Path:
    """Quality (ES, PS, NS, known facts kept) beside cost (steps per fact, target-phase time), one
    bar group per configuration: what stopping earlier gains and what it gives up."""
    plt = pyplot()
    runs = results["runs"]
    names = list(runs)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    keys = [*KEYS, "known_kept"]
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar([j + i * width for j in range(len(names))], [runs[n]["edited"].get(key) or 0 for n in names],
               width, label="known kept" if key == "known_kept" else key, color=f"C{i}")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 125)  # room above the bars for the legend
    ax.set_ylabel("%")
    ax.legend(fontsize=7, ncols=len(keys), loc="upper center")
    bx.bar(names, [runs[n]["mean_steps"] for n in names], color="C5")
    bx.set_ylabel("steps per fact (all rounds)")
    bx.tick_params(axis="x", rotation=30, labelsize=7)
    for label in bx.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.suptitle(f"Stopping, verification, ridge, band on {results.get('model', 'smollm2-135m')}, one batch of "
                 f"{results['n']} (counterfact-train)",
                 fontsize=9)
    return save(fig, path)


if __name__ == "__main__":
    # round-one target vectors do not depend on λ or the ridge term: configurations share them
    sweep.main(__doc__, CONFIGS, plot, stop_table, "benchmarks/results/stop_tuning", retention=True,
               checkpoint=cache_dir() / "targets")
