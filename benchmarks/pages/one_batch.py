"""Blocks of docs/results.md on one batch of edits to SmolLM2: scaling with N, the layer band,
causal tracing and the sweep that chose the preset."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from memit.eval.metrics import counterfact_strata
from memit.eval.results import parse_result_path
from memit.hparams import preset_for

from .figures import compare_plot
from .load import RES, fmt_ci, fmt_files, fmt_machine, fmt_opt, load_one, load_results
from .page import Figure


def scaling_section(dataset: str, folder: str, command: str) -> list[str]:
    runs = sorted((r for r in load_results(f"{folder}/{dataset}_memit_n*.json")
                   if parse_result_path(r["_file"]).plain), key=lambda r: r["n"])
    if not runs:
        return [f"*No {dataset} results yet.*", ""]
    keys = ["ES", "PS", "NS", "Score", "GE"] if dataset == "counterfact" else ["efficacy", "paraphrase", "specificity"]
    keys = [k for k in keys if k in runs[0]["edited"]]
    command = command.replace("{ns}", " ".join(str(r["n"]) for r in runs))
    lines = [f"Command: `{command}`", "", "| N | " + " | ".join(f"{k} unedited → MEMIT" for k in keys)
             + " | edit wall time | targets converged / clamped |", "|---" * (len(keys) + 3) + "|"]
    for r in runs:
        cells = [f"{fmt_ci(r['unedited'], k)} → **{fmt_ci(r['edited'], k)}**" for k in keys]
        t = r["targets"]
        lines.append(f"| {r['n']} | " + " | ".join(cells) + f" | {r['edit_wall_s']:.0f} s | "
                     f"{t['converged']} / {t['clamped']} of {r['n']} |")
    big = [r for r in runs if r["n"] >= 1000 and dataset == "counterfact"]
    if big:  # the evaluation issue's targets, read off the largest point
        r = big[-1]
        e, u = r["edited"], r["unedited"]
        ge = f", fluency GE {100 * (e['GE'] / u['GE'] - 1):+.1f} % vs unedited (target within ±5 %)" if "GE" in e else ""
        lines += ["", (f"Against the targets at N = {r['n']}: ES {e['ES']:.1f} (target ≥ 99), PS {e['PS']:.1f} "
                       f"(≥ 90), NS {e['NS']:.1f} vs unedited {u['NS']:.1f} (≥ {u['NS'] - 3:.1f}){ge}.")]
    for r in (x for x in runs if x["n"] >= 1000):  # why the largest point falls: targets, or writing them
        li = max(r["layers_info"], key=lambda x: x["delta_rel_norm"])
        resid = f"; mean residual ‖z − h‖ left after the edit {r['resid_after']:.1f} of {r['layers_info'][0]['resid_norm']:.1f}" \
            if r.get("resid_after") else ""
        lines += ["", (f"At N = {r['n']}: mean target NLL reached by the optimisation {r['targets']['mean_nll']:.2f} "
                       f"(0 = target certain), largest ‖ΔW‖/‖W‖ {li['delta_rel_norm']:.2f} (layer {li['layer']}){resid}.")]
    strata = [r | {"strata": r.get("strata") or counterfact_strata(r["per_case"]["unedited"], r["per_case"]["edited"])}
              for r in runs if dataset == "counterfact" and "per_case" in r]
    if strata:
        lines += ["", "| N | failed edits | unedited preferred target_true (hard): n, ES, PS | it did not (easy): n, ES, PS |",
                  "|---|---|---|---|"]
        for r in strata:
            h, ez = r["strata"]["hard"], r["strata"]["easy"]

            def cell(g):
                return f"{g['n']}, {g['ES']:.1f}, {g['PS']:.1f}" if g["n"] else "0"
            lines.append(f"| {r['n']} | {r['strata']['failed_edits']} | {cell(h)} | {cell(ez)} |")
    lines += ["", f"![{dataset} scaling]({Path('..') / 'benchmarks/results' / folder / f'{dataset}_memit_scaling.png'})",
              "", fmt_files(runs),
              ""]
    return lines


def bands_section() -> list[str]:
    """The layer-band ablation at N = 100: the traced band, the preset and bands fixed a priori."""
    runs = load_results("bands/*/counterfact_memit_n100.json") + load_results("scaling/counterfact_memit_n100.json")
    if len(runs) < 2:
        return ["*Not run yet.*", ""]
    runs.sort(key=lambda r: r["hparams"]["layers"][0])
    trace = load_results("trace/trace.json")
    traced = trace[0]["suggested_band"] if trace else None
    preset = preset_for("smollm2-135m").layers

    def how(layers: list[int]) -> str:
        tags = ["traced" if layers == traced else "", "preset" if layers == preset else ""]
        tags = [t for t in tags if t] or [("early", "middle", "late")[min(2, (layers[0] + layers[-1]) // 20)]]
        return " + ".join(tags)

    def band(r: dict) -> str:
        return f"{r['hparams']['layers'][0]}–{r['hparams']['layers'][-1]}"

    labels = [f"{band(r)} ({how(r['hparams']['layers'])})" for r in runs]
    fig = Figure(RES / "bands" / "bands_n100.png", partial(compare_plot, runs, labels, "counterfact",
                                                          title="MEMIT, N = 100 on counterfact-edit, by edited layer band"),
                 "layer bands")
    lines = [("Command: `memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/counterfact-edit.json "
              "--n 100 --layers L0,…,L5 --out benchmarks/results/bands/L<first>-<last>` (the preset band is the "
              "scaling run's N = 100 point). Same 100 records, same λ per d_ff; only the band differs."), "",
             ("| layers (how chosen) | ES | PS | NS | Score | GE | target NLL reached at the last layer | "
              "largest ‖ΔW‖/‖W‖ | largest cond | edit wall time | commit |"), "|---" * 11 + "|"]
    for r, label in zip(runs, labels):
        e, li = r["edited"], r["layers_info"]
        lines.append(f"| {label} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} | "
                     f"{fmt_opt(e, 'GE')} | {r['targets']['mean_nll']:.2f} | "
                     f"{max(x['delta_rel_norm'] for x in li):.3f} | {max(x['cond'] for x in li):.1e} | "
                     f"{r['edit_wall_s']:.0f} s | {str(r['machine']['commit'])[:7]} |")
    u = runs[0]["unedited"]
    unreached = [lab for r, lab in zip(runs, labels) if r["targets"]["mean_nll"] > 1]
    lines += ["", (f"Unedited on the same records: ES {u['ES']:.1f}, PS {u['PS']:.1f}, NS {u['NS']:.1f}, GE {u['GE']:.1f}.")]
    def base(d: dict) -> str:
        return ", ".join(f"{k} {d[k]:.1f}" for k in ("ES", "PS", "NS", "GE"))

    other = [f"{lab} (unedited {base(r['unedited'])})" for r, lab in zip(runs, labels) if r["unedited"] != u]
    if other:
        lines += ["", (f"Not quite the same baseline: {'; '.join(other)} was run at an earlier commit (see the table), "
                       "whose unedited scores differ from those above; compare its GE with that caution.")]
    if unreached:
        lines += ["", (f"Band {', '.join(unreached)}: the target vectors were not reached (mean target NLL > 1 after "
                       "the optimisation). A δ added at the last block's output at the subject's last token has no "
                       "later attention layer to carry it to the position that predicts the object, so it cannot "
                       "change the prediction and MEMIT has nothing to write: a band must end well before the last "
                       "block.")]
    lines += [
              "", fig, "",
              fmt_files(runs), ""]
    return lines


def trace_section() -> list[str]:
    t = load_one("trace/trace.json")
    if t is None:
        return ["*Not measured yet.*", ""]
    return [(f"Command: `memit trace --facts ../shared/data/known_1000.json --n {t['n_candidates']} "
             f"--samples {t['samples']} --out benchmarks/results/trace`"), "",
            (f"{t['n_traced']} of {t['n_candidates']} candidate facts are predicted (top-1) by the model and were "
             f"traced; noise σ = {t['noise_sigma']:.3f}. Suggested band (width 6, largest MLP effect at the "
             f"last subject token): **{t['suggested_band']}**."), "",
            "![causal trace](../benchmarks/results/trace/trace.png)", "",
            f"File: `{t['_file']}`. Machine: {fmt_machine(t['machine'])}.", ""]


def preset_tuning_section() -> list[str]:
    tune = load_results("preset/tune_n*.json")
    if not tune:
        return ["*Not measured yet.*", ""]
    t = tune[0]
    out = ["Command: `python benchmarks/tune_preset.py --n 50`", "",
           (f"counterfact-train, first {t['n']} records; unedited ES/PS/NS "
            f"{t['unedited']['ES']:.0f} / {t['unedited']['PS']:.0f} / {t['unedited']['NS']:.0f}."), "",
           "| layers | λ per d_ff (λ) | ES | PS | NS | Score | ‖ΔW‖/‖W‖ last layer |", "|---|---|---|---|---|---|---|"]
    for r in t["runs"].values():
        e = r["edited"]
        out.append(f"| {r['layers'][0]}–{r['layers'][-1]} | {r['lam_per_dff']} ({r['lambda']:.0f}) | {e['ES']:.0f} "
                   f"| {e['PS']:.0f} | {e['NS']:.0f} | {e['Score']:.1f} | {r['layers_info'][-1]['delta_rel_norm']:.3f} |")
    return out + ["", "![preset tuning](../benchmarks/results/preset/tune_n50.png)", ""]
