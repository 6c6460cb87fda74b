"""Choose AlphaEdit's null space and α for SmolLM2 by measurement on counterfact-train only.

AlphaEdit's threshold (eigenvalue of C₀ < 2·10⁻²) was set for models whose C₀ has a near-null
space. SmolLM2's C₀ at layers 3–8 is full rank (smallest eigenvalue 2–4·10⁻³), and 2·10⁻² there
takes directions that hold 21–53 % of ordinary text's key energy. This compares, on one batch of
N train facts (the same target vectors for all): MEMIT; AlphaEdit with the absolute threshold; and
AlphaEdit with the null space chosen by the share of tr C₀ it may hold (``null_energy``), each
with α = 1 and AlphaEdit's own α = 10. Reported: ES/PS/NS, perplexity on wikitext-2 *validation*,
and the text change tr(ΔW C₀ ΔWᵀ)/tr(W C₀ Wᵀ) per layer. Resumable: one JSON, finished
configurations are skipped on a rerun.

    python benchmarks/tune_alphaedit.py --n 100 --out benchmarks/results/alphaedit_tuning
"""

from __future__ import annotations

from pathlib import Path

import sweep
import torch
from pages.sweeps import alphaedit_table

from memit.eval.plots import pyplot, save
from memit.hparams import preset_for
from memit.models.loading import cache_dir
from memit.stats import stats_for

CONFIGS: sweep.Configs = {
    "memit": ("memit", {}),
    **{f"threshold2e-2_alpha{a}": ("alphaedit", {"null_threshold": 2e-2, "alpha": a}) for a in (1.0, 10.0)},
    **{f"energy{e:g}_alpha{a}": ("alphaedit", {"null_energy": e, "alpha": a})
       for e in (0.1, 0.03, 0.01, 0.003) for a in (1.0, 10.0)},
}


def c0_spectrum(model, tok, results: dict) -> None:
    """The premise, recorded once: does C₀ have a near-null space at all?"""
    if "c0_eigenvalues" not in results:
        c0 = stats_for(model, tok, preset_for("smollm2-135m"))
        results["c0_eigenvalues"] = {str(layer): {"min": float(ev[0]), "max": float(ev[-1])}
                                     for layer, ev in ((la, torch.linalg.eigvalsh(c)) for la, c in c0.items())}


def plot(results: dict, path: Path) -> Path:
    """Efficacy against the mean text change of the edited layers: MEMIT sits alone in the
    upper left (edits taken, ordinary text moved least) when AlphaEdit has no null space to use."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (name, r) in enumerate(results["runs"].items()):
        change = sum(x["text_change"] for x in r["layers_info"]) / len(r["layers_info"])
        c = r["changes"]
        label = "MEMIT" if r["method"] == "memit" else (
            (f"eigenvalue<{c['null_threshold']:g}" if "null_threshold" in c else f"{c['null_energy']:.1%} of tr C₀") + f", α={c['alpha']:g}")
        ax.scatter(change, r["edited"]["ES"], color="C3" if r["method"] == "memit" else f"C{int(c['alpha'] > 1)}", s=30)
        ax.annotate(f"{label}; ppl {r['edited']['perplexity']:.2f}", (change, r["edited"]["ES"]), fontsize=7,
                    xytext=(5, 6 if i % 2 else -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("text change, mean over layers 3–8: tr(ΔW C₀ ΔWᵀ) / tr(W C₀ Wᵀ)")
    ax.set_ylabel("ES (%)")
    ax.set_ylim(0, 108)
    ax.grid(alpha=0.3)
    ax.set_title(f"AlphaEdit settings vs MEMIT, one batch of {results['n']} (counterfact-train); "
                 f"unedited ES {results['unedited']['ES']:.0f}, ppl {results['unedited']['perplexity']:.2f}", fontsize=8)
    return save(fig, path)


if __name__ == "__main__":
    sweep.main(__doc__, CONFIGS, plot, alphaedit_table, "benchmarks/results/alphaedit_tuning", prepare=c0_spectrum,
               checkpoint=cache_dir() / "targets")
