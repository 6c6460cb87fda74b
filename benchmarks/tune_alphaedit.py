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

import argparse
import json
import time
from pathlib import Path

import torch

import memit
from memit.eval.metrics import counterfact_case_scores, counterfact_summary
from memit.eval.perplexity import perplexity
from memit.eval.plots import pyplot, save
from memit.eval.run import machine
from memit.hparams import preset_for
from memit.methods import run
from memit.models.loading import cache_dir
from memit.stats import stats_for

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
DATA = SHARED / "counterfact/easyedit/counterfact-train.json"
VALID = SHARED / "wikitext-2-raw/wiki.valid.raw"
# name → (method, settings changed from the SmolLM2 preset)
CONFIGS: dict[str, tuple[str, dict]] = {
    "memit": ("memit", {}),
    **{f"threshold2e-2_alpha{a}": ("alphaedit", {"null_threshold": 2e-2, "alpha": a}) for a in (1.0, 10.0)},
    **{f"energy{e:g}_alpha{a}": ("alphaedit", {"null_energy": e, "alpha": a})
       for e in (0.1, 0.03, 0.01, 0.003) for a in (1.0, 10.0)},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/alphaedit_tuning")
    ap.add_argument("--report", action="store_true", help="only redraw the plot and print the table")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"tune_n{args.n}.json"
    results = json.loads(file.read_text()) if file.exists() else {"runs": {}}
    if not args.report:
        measure(results, args.n, file)
    plot(results, out / f"tune_n{args.n}.png")
    print(table(results))


def measure(results: dict, n: int, file: Path) -> None:
    """Run every configuration not in ``results`` yet, writing the file after each."""
    model, tok = memit.load_model("smollm2-135m")
    cases = memit.load_cases(str(DATA), n=n)
    reqs = [c.request for c in cases]
    if "unedited" not in results:
        results["unedited"] = counterfact_summary(counterfact_case_scores(model, tok, cases))
        results["unedited"]["perplexity"] = perplexity(model, tok, str(VALID))
    if "c0_eigenvalues" not in results:  # the premise: does C₀ have a near-null space at all?
        c0 = stats_for(model, tok, preset_for("smollm2-135m"))
        results["c0_eigenvalues"] = {str(layer): {"min": float(ev[0]), "max": float(ev[-1])}
                                     for layer, ev in ((la, torch.linalg.eigvalsh(c)) for la, c in c0.items())}
    results.update(n=n, data=str(DATA), perplexity_text=str(VALID), machine=machine())
    file.write_text(json.dumps(results, indent=1))
    for name, (method, changes) in CONFIGS.items():
        if name in results["runs"]:
            continue
        hp = preset_for("smollm2-135m")
        for k, v in changes.items():
            setattr(hp, k, v)
        t = time.perf_counter()
        delta = run(method, model, tok, reqs, hp, checkpoint=cache_dir() / "targets")
        post = counterfact_summary(counterfact_case_scores(model, tok, cases))
        post["perplexity"] = perplexity(model, tok, str(VALID))
        delta.revert(model)
        results["runs"][name] = {"method": method, "changes": changes, "edited": post,
                                 "wall_s": time.perf_counter() - t, "layers_info": delta.meta["layers_info"]}
        print(name, {k: round(post[k], 2) for k in ("ES", "PS", "NS", "perplexity")}, flush=True)
        file.write_text(json.dumps(results, indent=1))


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


def table(results: dict) -> str:
    u = results["unedited"]
    rows = ["| configuration | ES | PS | NS | perplexity (valid) | text change, layers 3–8 (×10⁻³) | null dims (share of tr C₀) |",
            "|---|---|---|---|---|---|---|",
            f"| unedited | {u['ES']:.0f} | {u['PS']:.0f} | {u['NS']:.0f} | {u['perplexity']:.2f} | | |"]
    for name, r in results["runs"].items():
        e, li = r["edited"], r["layers_info"]
        change = " / ".join(f"{x['text_change'] * 1e3:.1f}" for x in li)
        null = " / ".join(f"{x['null_dim']} ({x['null_energy']:.0%})" for x in li) if "null_dim" in li[0] else ""
        rows.append(f"| {name} | {e['ES']:.0f} | {e['PS']:.0f} | {e['NS']:.0f} | {e['perplexity']:.2f} | {change} | {null} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
