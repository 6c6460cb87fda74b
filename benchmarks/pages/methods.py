"""Blocks of docs/results.md that set MEMIT beside the other methods: ROME, FT-L/FT-W, AlphaEdit."""

from __future__ import annotations

from functools import partial

from memit.eval.metrics import counterfact_summary
from memit.hparams import MemitHyperParams

from .figures import compare_plot
from .load import RES, fmt_ci, fmt_files, fmt_machine, fmt_opt, load_results
from .page import Figure
from .sweeps import alphaedit_table, best, edge_note, ft_table


def method_label(r: dict) -> str:
    """A method with the settings that tell its rows apart: the fine-tuning baselines ran with the
    papers' settings and with settings tuned on counterfact-train."""
    m = r["method"]
    how = " (tuned on train)" if r.get("tuned") else " (earlier preset)"
    if m not in ("ft", "ft-w"):
        return m
    ft = MemitHyperParams.from_dict(r["hparams"]).ft
    if m == "ft":  # FT-L, as the ROME paper calls it
        return f"ft-l, ε {ft.norm_bound:g}{how}"
    return f"ft-w, lr {ft.lr:g}, decay {ft.weight_decay:g}{how}"


def es_by_quarter(r: dict) -> list[float]:
    """ES of each quarter of the requests, in the order they were edited."""
    cases = r["per_case"]["edited"]
    n = len(cases)  # quarter i holds cases i·n/4 … (i+1)·n/4, so none is left out when 4 does not divide n
    return [counterfact_summary(cases[i * n // 4:(i + 1) * n // 4])["ES"] for i in range(4)]


def edit_age_lines(runs: list[dict]) -> list[str]:
    """ROME edits request after request, so a later rank-one update can undo an earlier one: its ES by
    the age of the edit shows how much, beside MEMIT's single batch over the same requests."""
    lines = []
    for rome in (r for r in runs if r["method"] == "rome" and r["n"] >= 100 and "per_case" in r):
        memit = [r for r in runs if r["method"] == "memit" and r["n"] == rome["n"] and "per_case" in r]
        line = (f"ES by the age of the edit, N = {rome['n']} (the requests in edit order, in quarters, first to last): "
                f"ROME {' / '.join(f'{x:.1f}' for x in es_by_quarter(rome))}")
        if memit:
            line += f"; MEMIT's one batch over the same quarters {' / '.join(f'{x:.1f}' for x in es_by_quarter(memit[0]))}"
        lines += ["", line + "."]
    return lines


def methods_section() -> list[str]:
    """The paper's comparison: MEMIT against ROME (request after request) and FT-L, one batch of N."""
    runs = load_results("methods/counterfact_*_n*.json")
    runs += [dict(r, tuned=True) for r in load_results("methods/tuned/counterfact_*_n*.json")]
    if not runs:
        return ["*Not run yet.*", ""]
    # MEMIT at N = 1000 is the review's run (the same edit, with perplexity and retention added): not run twice.
    have = {(r["method"], r["n"]) for r in runs}
    runs += [dict(r, shared=True) for r in load_results("review/n1000/cov/counterfact_memit_n1000.json")
             if ("memit", r["n"]) not in have]
    order = {"memit": 0, "rome": 1, "ft": 2, "ft-w": 3}
    runs.sort(key=lambda r: (r["n"], order.get(r["method"], 9)))
    # the settings as the untuned FT runs recorded them, so the prose cannot drift from the files
    hp = MemitHyperParams.from_dict(
        next((r["hparams"] for r in runs if r["method"] in ("ft", "ft-w") and not r.get("tuned")), runs[0]["hparams"]))
    mid, band = hp.rome_layer(), f"{hp.layers[0]}–{hp.layers[-1]}"
    lines = [("Command: `memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/counterfact-edit.json "
              f"--n N --method M --out benchmarks/results/methods`, M ∈ memit, rome, ft, ft-w. ROME edits layer {mid} (the "
              f"middle of the preset's {band}) one request after another; FT-L fine-tunes layer {mid}'s MLP output within "
              f"±{hp.ft.norm_bound:g} per entry, FT-W the same with a decay of the change ({hp.ft.weight_decay:g}) "
              "instead of the bound; both take one Adam step per pass over the N requests, "
              f"{hp.ft.steps} passes. Those are the papers' settings, under which neither edits "
              "SmolLM2; the rows marked \"tuned on train\" use the settings `benchmarks/tune_ft.py` chose on "
              "counterfact-train (`--hparams benchmarks/hparams/smollm2-135m_ft-l.json --out "
              "benchmarks/results/methods/tuned`; the sweep is below). Target-vector time 0 s: the vectors were stored "
              "by an earlier run on the same requests and settings."),
             "", "| N | method | ES | PS | NS | Score | GE | ‖ΔW‖/‖W‖ (largest layer) | edit wall time (target vectors) | commit |",
             "|---" * 10 + "|"]
    plots = []
    for n in sorted({r["n"] for r in runs}):
        group = [r for r in runs if r["n"] == n]
        u = group[0]["unedited"]
        lines.append(f"| {n} | unedited | {fmt_ci(u, 'ES')} | {fmt_ci(u, 'PS')} | {fmt_ci(u, 'NS')} | {u['Score']:.1f} | "
                     f"{fmt_opt(u, 'GE')} | | | |")
        for r in group:
            e, t = r["edited"], r["timings"]
            rel = f"{max(x['delta_rel_norm'] for x in r['layers_info']):.4f}" + ("†" if r["method"] == "rome" else "")
            vectors = f"{t['targets']:.0f} s" if "targets" in t else "none used"
            lines.append(f"| {n} | {method_label(r)}{'‡' if r.get('shared') else ''} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | "
                         f"{e['Score']:.1f} | {fmt_opt(e, 'GE')} | {rel} | {r['edit_wall_s']:.0f} s "
                         f"({vectors}) | {str(r['machine']['commit'])[:7]} |")
        if len(group) > 1:
            draw = partial(compare_plot, group, [method_label(r) for r in group], "counterfact",
                           title=f"N = {n} on counterfact-edit: MEMIT, ROME (request by request), FT-L, FT-W")
            plots += ["", Figure(RES / "methods" / f"methods_n{n}.png", draw, f"methods at N = {n}")]
    lines += ["", "† ROME: the largest change made by a single request (it records one rank-one update per request)."]
    lines += edit_age_lines(runs)
    if any(r.get("shared") for r in runs):
        lines += ["", ("‡ The review's run of the same edit (`python benchmarks/review.py run cov-1000`, which adds "
                  "`--perplexity` and `--retention` to this command), not run a second time.")]
    lines += plots
    return lines + ["", fmt_files(runs),
                    ""]


def alphaedit_section() -> list[str]:
    """Why AlphaEdit runs with its own absolute threshold here: the tuning on counterfact-train."""
    tune = load_results("alphaedit_tuning/tune_n*.json")
    if not tune:
        return ["*Not measured yet.*", ""]
    t = tune[0]
    li = t["runs"]["threshold2e-2_alpha1.0"]["layers_info"]
    dims = sorted(x["null_dim"] for x in li)
    shares = sorted(x["null_energy"] for x in li)
    lo, hi = min(e["min"] for e in t["c0_eigenvalues"].values()), max(e["min"] for e in t["c0_eigenvalues"].values())
    text = (f"Command: `python benchmarks/tune_alphaedit.py --n {t['n']}` (counterfact-train, first {t['n']} records, "
            "one batch, the same target vectors for every row; perplexity on the first 20,000 tokens of wikitext-2 "
            "*validation*). AlphaEdit projects the update onto the eigenvectors of C₀ below a threshold, assuming they "
            "carry almost none of ordinary text's key energy. On SmolLM2 (d_ff 1,536) C₀ is full rank at layers 3–8 "
            f"(smallest eigenvalue {lo:.1e}–{hi:.1e}, of 100,000 tokens): "
            f"the absolute threshold 2·10⁻² of AlphaEdit's code takes {dims[0]:,}–{dims[-1]:,} directions holding "
            f"{shares[0]:.0%}–{shares[-1]:.0%} of tr C₀. Text change: tr(ΔW C₀ ΔWᵀ)/tr(W C₀ Wᵀ) per layer.")
    return [text, "", alphaedit_table(t), "", "![AlphaEdit tuning](../benchmarks/results/alphaedit_tuning/tune_n100.png)", "",
            f"File: `{t['_file']}`. Machine: {fmt_machine(t['machine'])}.", ""]


def ft_tuning_section() -> list[str]:
    """Why the fine-tuning baselines run with other settings than their papers': the sweep on train."""
    tune = load_results("ft_tuning/tune_n*.json")
    if not tune:
        return ["*Not measured yet.*", ""]
    t = tune[0]
    picks = "; ".join(f"{m}: `{best(t, m)}`" for m in ("ft", "ft-w") if best(t, m))
    text = (f"Command: `python benchmarks/tune_ft.py --n {t['n']}` (counterfact-train, first {t['n']} records, one "
            "batch; perplexity on the first 20,000 tokens of wikitext-2 *validation*). ROME's FT-L bounds each entry "
            "of the layer's MLP output weights to ±5·10⁻⁴ with the learning rate equal to the bound. The sweep "
            "ties the learning rate to the bound as ROME "
            "does (FT-L), and varies FT-W's learning rate at the decay 0.5, then at weaker decays (at 0.5 the decay "
            f"holds the change at the same small size whatever the rate). Best Score: {picks}; the methods table "
            "above runs them (`benchmarks/hparams/`)." + edge_note(t))
    return [text, "", ft_table(t), "", f"![FT tuning](../benchmarks/results/ft_tuning/tune_n{t['n']}.png)", "",
            (f"File: `{t['_file']}`. Machine and commit: per configuration, in the table (the sweep resumes across "
            "machines)."), ""]
