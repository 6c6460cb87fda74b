"""Choose FT-L's bound and FT-W's learning rate for SmolLM2 by measurement on counterfact-train only.

The fine-tuning baselines carry their papers' settings: ROME's FT-L on GPT-2 XL bounds each entry
of the layer's MLP output weights to ±5·10⁻⁴ with Adam's learning rate equal to that bound (on
GPT-J it used 5·10⁻⁵ for both). On SmolLM2 those settings edit nothing: at N = 10, 100 and 1,000
of counterfact-edit, ES stays at the unedited model's. A baseline that does nothing is no
comparison, so, as the papers retuned it per model, this sweeps on N train facts (one batch):
FT-L with the bound ε and learning rate ε tied as ROME ties them, and FT-W over the learning rate
with the preset's decay (0.5 of the change), then with weaker decays: at 0.5 the decay's pull
outweighs the gradient of the edits' loss at every learning rate tried, so Adam settles at the same
small change whatever its step size. Reported: ES/PS/NS and their Score, perplexity on wikitext-2
*validation*, and ‖ΔW‖/‖W‖. The preset takes the best Score of each. Resumable: one JSON,
finished configurations are skipped on a rerun.

    python benchmarks/tune_ft.py --n 100 --out benchmarks/results/ft_tuning
"""

from __future__ import annotations

from pathlib import Path

import sweep
from pages.sweeps import ft_table, setting, value

from memit.eval.plots import pyplot, save

# ROME's bound 5·10⁻⁴ is a small share of a typical entry of SmolLM2's MLP output weights (their rms
# is on docs/results.md, fine-tuning section); the sweep goes up a hundredfold from it.
BOUNDS = (5e-4, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2)  # FT-L: ε, with ft_lr = ε
RATES = (5e-4, 2e-3, 5e-3, 2e-2)  # FT-W: ft_lr, decay as the preset
DECAYS = (5e-2, 5e-3)  # FT-W: weaker decays, at the two larger rates
CONFIGS: sweep.Configs = {
    **{f"ft-l_eps{e:g}": ("ft", {"ft_norm_bound": e, "ft_lr": e}) for e in BOUNDS},
    **{f"ft-w_lr{lr:g}": ("ft-w", {"ft_lr": lr}) for lr in RATES},
    **{f"ft-w_lr{lr:g}_wd{wd:g}": ("ft-w", {"ft_lr": lr, "ft_weight_decay": wd}) for wd in DECAYS for lr in RATES[2:]},
}


def plot(results: dict, path: Path) -> Path:
    """ES, NS and Score against the setting swept, one panel per method: where the edits start
    to take, and what they cost the neighbours."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    u = results["unedited"]
    for ax, (method, xlabel) in zip(axes, (("ft", "FT-L bound ε (= learning rate)"), ("ft-w", "FT-W learning rate"))):
        runs = [r for r in results["runs"].values() if r["method"] == method]
        decays = sorted({value(r, "ft_weight_decay") for r in runs}, reverse=True)
        for style, decay in zip(("o-", "s--", "^:"), decays):  # FT-W: one set of lines per decay
            line = sorted((r for r in runs if value(r, "ft_weight_decay") == decay), key=setting)
            for i, key in enumerate(("ES", "NS", "Score")):
                label = key if method == "ft" else f"{key}, decay {decay:g}"
                ax.plot([setting(r) for r in line], [r["edited"][key] for r in line], style, color=f"C{i}", label=label, ms=4)
        for i, key in enumerate(("ES", "NS", "Score")):
            ax.axhline(u[key], color=f"C{i}", ls=":", lw=1)
        if runs:  # a method not swept yet leaves its panel empty (and unscalable)
            ax.set_xscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% (dotted: unedited)")
    fig.suptitle(f"Fine-tuning baselines on SmolLM2, one batch of {results['n']} (counterfact-train)", fontsize=9)
    return save(fig, path)


if __name__ == "__main__":
    sweep.main(__doc__, CONFIGS, plot, ft_table, "benchmarks/results/ft_tuning")
