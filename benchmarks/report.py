"""Build docs/results.md from the committed result files, so the page always matches them.

    python benchmarks/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

from page_plots import compare_plot

from memit.eval.metrics import counterfact_strata, counterfact_summary
from memit.eval.results import load_result, parse_result_path, sequence_label
from memit.hparams import MemitHyperParams, preset_for

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"


def load_results(pattern: str) -> list[dict]:
    """The result files matching ``pattern``, in today's schema, each with the file it came from."""
    return [load_result(p) | {"_file": str(p.relative_to(ROOT))} for p in sorted(RES.glob(pattern))]


def fmt_ci(d: dict, k: str) -> str:
    ci = d.get(k + "_ci95")
    return f"{d[k]:.1f} [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else f"{d[k]:.1f}"


def _machine(m: dict) -> str:
    gpu = f", {m['cuda']}" if m.get("cuda") else ""
    return f"{m.get('cpu')} ({m.get('cores')} cores, torch {m.get('torch')}{gpu})"


def fmt_machine(m: dict) -> str:
    return f"{_machine(m)}, commit {str(m.get('commit'))[:10]}"


def fmt_files(runs: list[dict]) -> str:
    """The result files, each with the commit it ran at (runs of one table often span commits), and the machine."""
    commits = [(r.get("machine") or {}).get("commit") for r in runs]
    files = ", ".join(f"`{r['_file']}` ({c[:10] if c else 'commit not recorded'})" for r, c in zip(runs, commits))
    machines = dict.fromkeys(_machine(r["machine"]) for r in runs if r.get("machine"))
    return f"Files (commit): {files}. Machine: {'; '.join(machines) or 'not recorded'}."


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
    png = compare_plot(runs, labels, "counterfact", RES / "bands" / "bands_n100.png",
                       "MEMIT, N = 100 on counterfact-edit, by edited layer band")
    lines = [("Command: `memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/counterfact-edit.json "
              "--n 100 --layers L0,…,L5 --out benchmarks/results/bands/L<first>-<last>` (the preset band is the "
              "scaling run's N = 100 point). Same 100 records, same λ per d_ff; only the band differs."), "",
             ("| layers (how chosen) | ES | PS | NS | Score | GE | target NLL reached at the last layer | "
              "largest ‖ΔW‖/‖W‖ | largest cond | edit wall time | commit |"), "|---" * 11 + "|"]
    for r, label in zip(runs, labels):
        e, li = r["edited"], r["layers_info"]
        lines.append(f"| {label} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} | "
                     f"{e.get('GE', float('nan')):.1f} | {r['targets']['mean_nll']:.2f} | "
                     f"{max(x['delta_rel_norm'] for x in li):.3f} | {max(x['cond'] for x in li):.1e} | "
                     f"{r['edit_wall_s']:.0f} s | {str(r['machine']['commit'])[:7]} |")
    u = runs[0]["unedited"]
    unreached = [lab for r, lab in zip(runs, labels) if r["targets"]["mean_nll"] > 1]
    lines += ["", (f"Unedited on the same records: ES {u['ES']:.1f}, PS {u['PS']:.1f}, NS {u['NS']:.1f}, GE {u['GE']:.1f}. "
              "The preset band 3–8 is also the paper's GPT-J band; wall times of some rows were taken while other jobs "
              "shared the two cores (the speed section has clean timings).")]
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
              "", f"![layer bands](../{png.relative_to(ROOT)})", "",
              fmt_files(runs), ""]
    return lines


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
              "by an earlier run on the same requests and settings (a batch of 100 costs about 440 s, `speed/`)."),
             "", "| N | method | ES | PS | NS | Score | GE | ‖ΔW‖/‖W‖ (largest layer) | edit wall time (target vectors) | commit |",
             "|---" * 10 + "|"]
    plots = []
    for n in sorted({r["n"] for r in runs}):
        group = [r for r in runs if r["n"] == n]
        u = group[0]["unedited"]
        lines.append(f"| {n} | unedited | {fmt_ci(u, 'ES')} | {fmt_ci(u, 'PS')} | {fmt_ci(u, 'NS')} | {u['Score']:.1f} | "
                     f"{u.get('GE', float('nan')):.1f} | | | |")
        for r in group:
            e, t = r["edited"], r["timings"]
            rel = f"{max(x['delta_rel_norm'] for x in r['layers_info']):.4f}" + ("†" if r["method"] == "rome" else "")
            vectors = f"{t['targets']:.0f} s" if "targets" in t else "none used"
            lines.append(f"| {n} | {method_label(r)}{'‡' if r.get('shared') else ''} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | "
                         f"{e['Score']:.1f} | {e.get('GE', float('nan')):.1f} | {rel} | {r['edit_wall_s']:.0f} s "
                         f"({vectors}) | {str(r['machine']['commit'])[:7]} |")
        if len(group) > 1:
            png = compare_plot(group, [method_label(r) for r in group], "counterfact", RES / "methods" / f"methods_n{n}.png",
                               f"N = {n} on counterfact-edit: MEMIT, ROME (request by request), FT-L, FT-W")
            plots += ["", f"![methods at N = {n}](../{png.relative_to(ROOT)})"]
    lines += ["", "† ROME: the largest change made by a single request (it records one rank-one update per request)."]
    lines += edit_age_lines(runs)
    if any(r.get("shared") for r in runs):
        lines += ["", ("‡ The review's run of the same edit (`python benchmarks/review.py run cov-1000`, which adds "
                  "`--perplexity` and `--retention` to this command), not run a second time.")]
    lines += plots
    return lines + ["", fmt_files(runs),
                    ""]


SEQ_COMMAND = ("memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/counterfact-edit.json "
               "--n 2000 --batch-size 100 --method M --perplexity ../shared/data/wikitext-2-raw/wiki.test.raw "
               "--retention ../shared/data/known_1000.json --out benchmarks/results/sequential")


# Sequential runs stopped on purpose before the end (label: (edits, why)), so the pages do not call
# them "in progress" and list them as missing.
STOPPED = {"alphaedit": (1000, "to give its CPU time to the paper's AlphaEdit (base C₀)")}


def stopped_note(r: dict) -> str | None:
    """Why a run stopped on purpose ends where it does, with the perplexity that made it stop."""
    if sequence_label(r) not in STOPPED or not finished(r):
        return None
    first, last = r["points"][0], r["points"][-1]
    return (f"stopped at {last['edits']:,} edits, perplexity {last['perplexity']:.1f} against "
            f"{first['perplexity']:.1f} unedited, {STOPPED[sequence_label(r)][1]}")


def progress_note(r: dict) -> str:
    """What the row of a run that has not reached its end says."""
    return f"in progress: {r['points'][-1]['edits']:,} of {r['n']:,} edits"


def target_verdict(runs: list[dict]) -> str | None:
    """The methods issue's yardstick, read from the files: after 2,000 sequential edits, ES ≥ 98 and
    NS within 10 points of the unedited model (AlphaEdit's reported result on GPT-J and Llama-3)."""
    done = [r for r in runs if r["points"][-1]["edits"] >= 2000]
    if not done:
        return None
    parts = []
    for r in done:
        first, last = r["points"][0], r["points"][-1]
        met = last["ES"] >= 98 and first["NS"] - last["NS"] <= 10
        parts.append(f"{sequence_label(r)}: ES {last['ES']:.1f}, NS {last['NS']:.1f} against {first['NS']:.1f} unedited "
                     f"({first['NS'] - last['NS']:.1f} below), perplexity {last['perplexity']:,.1f} — "
                     + ("target met" if met else "target missed"))
    return ("Against the target (after 2,000 sequential edits ES ≥ 98 and NS within 10 points of the unedited "
            "model): " + "; ".join(parts) + ".")


def finished(r: dict) -> bool:
    """Whether a sequential run is as far as it will go: all its batches, or where it was stopped."""
    stop = STOPPED.get(sequence_label(r), (r["n"], ""))[0]
    return r["points"][-1]["edits"] >= min(stop, r["n"])


def sequential_section() -> list[str]:
    """Editing over time: 2,000 edits in batches of 100, all edits so far scored after each batch."""
    runs = load_results("sequential/counterfact_*_seq*.json")
    runs = [r for r in runs if len(r["points"]) > 1]
    if not runs:
        return ["*Not run yet.*", ""]
    lines = [(f"Command: `{SEQ_COMMAND}`, M ∈ memit, memit-seq, alphaedit (resumable: each batch is a step of "
             "the edit journal beside the result file), each batch with the C₀ of the model as it finds it; "
             "\"(base C₀)\" marks a run with `--sequential-stats base` added, which keeps the unedited model's C₀ "
             "and AlphaEdit's projector for the whole sequence, as AlphaEdit's own code does. After each batch every edit made so far is scored; "
             "perplexity on the first 20,000 tokens of wikitext-2 test; known facts: those of known_1000 whose "
             "subject no edit of the run touches, as a share of the ones the unedited model knew. "
              "The 0 row is the unedited model on all 2,000 records. A batch is quick when its target vectors were "
              "stored already by a method whose edits so far are identical (MEMIT and MEMIT-seq after one batch). "
              "Runs on a GPU (their machine below) were made by `bash benchmarks/gpu_seq.sh`, which runs this command "
              "for memit, memit-seq and alphaedit (base C₀) side by side on one GPU, with exact prefixes of the data "
              "(the first 2,000 records, and text holding the perplexity's 20,000 tokens) carried to the machine."), "",
             "| method | edits so far | ES | PS | NS | perplexity | known facts still known | edit time of the batch |",
             "|---" * 8 + "|"]
    for r in runs:
        pts = r["points"]
        shown = [p for p in pts if p["edits"] in (0, 100, 500, 1000, 1500, 2000)] + ([pts[-1]] if pts[-1]["edits"] % 500 else [])
        for p in shown:
            kept = fmt_ci(p["retention"], "kept") if p.get("retention", {}).get("kept") is not None else "–"
            took = "–" if p.get("edit_s") is None else f"{p['edit_s']:.0f} s"
            lines.append(f"| {sequence_label(r)} | {p['edits']} | {fmt_ci(p, 'ES')} | {fmt_ci(p, 'PS')} | {fmt_ci(p, 'NS')} | "
                         f"{p.get('perplexity', float('nan')):.2f} | {kept} | {took} |")
        if note := stopped_note(r):
            lines.append(f"| {sequence_label(r)} | *{note}* | | | | | | |")
        elif not finished(r):
            lines.append(f"| {sequence_label(r)} | *{progress_note(r)}* | | | | | | |")
    if verdict := target_verdict(runs):
        lines += ["", verdict]
    drift = load_results("sequential/text_change.json")
    if drift:
        lines += ["", ("How far the edited layers moved on ordinary text (`python benchmarks/seq_drift.py`, run where the "
                       "journals are; file `benchmarks/results/sequential/text_change.json`): the mean over layers 3–8 of "
                       "tr(ΣΔW C₀ ΣΔWᵀ)/tr(W C₀ Wᵀ) after the batches so far, C₀ and W of the unedited model: "
                       + "; ".join(f"{m} {pts[-1]['mean']:.3f} after {pts[-1]['edits']}"
                                   for m, pts in drift[0]["runs"].items()) + "."),
                  "", "![text change](../benchmarks/results/sequential/text_change.png)"]
        stats = {m: pts[-1] for m, pts in drift[0].get("statistics", {}).items() if pts}
        if stats:
            last = max(drift[0]["null_dim_unedited"], key=int)
            lines += ["", (f"The statistics a next batch would use (`--sequential-stats current`) against the unedited "
                           f"model's, at layer {last} (same file, field `statistics`): "
                           + "; ".join(f"{m} after {p['edits']}: C₀ {100 * p['rel_change'][last]:.0f} % away "
                                       f"(Frobenius), {p['null_dim'][last]} eigenvalues below AlphaEdit's threshold"
                                       for m, p in stats.items())
                           + f" (unedited: {drift[0]['null_dim_unedited'][last]}). `--sequential-stats base` keeps the "
                           "unedited ones instead, as MEMIT's and AlphaEdit's own code do.")]
    return lines + ["", "![sequential editing](../benchmarks/results/sequential/counterfact_sequential.png)", "",
                    fmt_files(runs + drift),
                    ""]


def margin_sequence_section() -> list[str]:
    """MEMIT-seq with today's preset (margin stop, verification rounds, ridge) over 2,000 edits,
    beside the same run with the paper's preset, against the margin issue's sequential targets."""
    new = load_results("seq_margin/counterfact_memit-seq_n2000_seq100.json")
    if not new:
        return ["*Not run yet.*", ""]
    r = new[0]
    old = load_results("sequential/counterfact_memit-seq_n2000_seq100.json")
    first = r["points"][0]
    lines = [("Command: `memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/counterfact-edit.json "
              "--n 2000 --batch-size 100 --method memit-seq --score-every 10 --retention ../shared/data/known_1000.json "
              "--perplexity ../shared/data/wikitext-2-raw/wiki.test.raw --out benchmarks/results/seq_margin` with the "
              f"default preset (stop {r['hparams']['stop']}, margin {r['hparams']['stop_margin']:g}, up to "
              f"{r['hparams']['rounds']} rounds, ridge {r['hparams']['ridge']:g}); all edits so far scored every 10th "
              "batch. The paper-preset row is the MEMIT-seq run of the section above, at the same edit counts. "
              "Edit times are not comparable: other work shared the 2 cores."), "",
             "| preset | edits so far | ES | PS | NS | perplexity | known facts still known |", "|---" * 7 + "|"]
    for label, run in [("default (margin)", r)] + [("paper", o) for o in old]:
        for p in (p for p in run["points"] if p["edits"] in {q["edits"] for q in r["points"]}):
            kept = fmt_ci(p["retention"], "kept") if p.get("retention", {}).get("kept") is not None else "–"
            lines.append(f"| {label} | {p['edits']} | {fmt_ci(p, 'ES')} | {fmt_ci(p, 'PS')} | {fmt_ci(p, 'NS')} | "
                         f"{p.get('perplexity', float('nan')):.2f} | {kept} |")
    last = r["points"][-1]
    if last["edits"] < r["n"]:
        lines.append(f"| default (margin) | *{progress_note(r)}* | | | | | |")
    else:
        checks = [("ES ≥ 95", last["ES"] >= 95, f"{last['ES']:.1f}"),
                  ("NS ≥ unedited − 6", last["NS"] >= first["NS"] - 6, f"{last['NS']:.1f} against {first['NS']:.1f}"),
                  ("perplexity ≤ 1.5 × unedited", last["perplexity"] <= 1.5 * first["perplexity"],
                   f"{last['perplexity']:.1f} = {last['perplexity'] / first['perplexity']:.2f}×")]
        lines += ["", "After 2,000 edits, against the margin issue's targets: " + "; ".join(
            f"{name}: {val}, {'met' if ok else 'missed'}" for name, ok, val in checks) + "."]
    if r.get("unedited_point_from"):
        lines += ["", (f"The 0 row was carried over from the run of this command at commit "
                       f"{r['unedited_point_from']['commit'][:10]} (same records, scoring code and unedited model), "
                       "not scored again.")]
    return lines + ["", fmt_files(new + old), ""]


def alphaedit_section() -> list[str]:
    """Why AlphaEdit runs with its own absolute threshold here: the tuning on counterfact-train."""
    from tune_alphaedit import table

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
            f"{shares[0]:.0%}–{shares[-1]:.0%} of tr C₀. Choosing the null space by the share of tr C₀ it may hold "
            "(`null_energy`) makes it worse, not better: a smaller null space leaves the update fewer directions, so "
            "either the edits fail (α = 10) or ΔW grows in the directions left and moves ordinary text more (α = 1). "
            "No AlphaEdit setting reaches MEMIT's efficacy with as little text change "
            "(tr(ΔW C₀ ΔWᵀ)/tr(W C₀ Wᵀ) per layer). The sequential runs use AlphaEdit's own threshold with α = 1, the "
            "best efficacy of the settings tried; AlphaEdit's code uses α = 10.")
    return [text, "", table(t), "", "![AlphaEdit tuning](../benchmarks/results/alphaedit_tuning/tune_n100.png)", "",
            f"File: `{t['_file']}`. Machine: {fmt_machine(t['machine'])}.", ""]


def ft_tuning_section() -> list[str]:
    """Why the fine-tuning baselines run with other settings than their papers': the sweep on train."""
    from tune_ft import best, edge_note, table

    tune = load_results("ft_tuning/tune_n*.json")
    if not tune:
        return ["*Not measured yet.*", ""]
    t = tune[0]
    picks = "; ".join(f"{m}: `{best(t, m)}`" for m in ("ft", "ft-w") if best(t, m))
    text = (f"Command: `python benchmarks/tune_ft.py --n {t['n']}` (counterfact-train, first {t['n']} records, one "
            "batch; perplexity on the first 20,000 tokens of wikitext-2 *validation*). ROME's FT-L bounds each entry "
            "of the layer's MLP output weights to ±5·10⁻⁴ with the learning rate equal to the bound; SmolLM2's "
            "entries have rms 0.18 at layers 3–8, so that bound is 0.3 % of a typical entry and the edit does "
            "nothing (the N = 10, 100, 1,000 rows above). The sweep ties the learning rate to the bound as ROME "
            "does (FT-L), and varies FT-W's learning rate at the decay 0.5, then at weaker decays (at 0.5 the decay "
            f"holds the change at the same small size whatever the rate). Best Score: {picks}; the methods table "
            "above runs them (`benchmarks/hparams/`)." + edge_note(t))
    return [text, "", table(t), "", f"![FT tuning](../benchmarks/results/ft_tuning/tune_n{t['n']}.png)", "",
            (f"File: `{t['_file']}`. Machine and commit: per configuration, in the table (the sweep resumes across "
            "machines)."), ""]


def stop_section() -> list[str]:
    """Per-fact stopping, verification and rounds: the sweep on train, then the chosen settings
    beside the paper's rule on the reporting split, with every figure the issue asks for."""
    from tune_stop import table

    out = []
    for t in sorted(load_results("stop_tuning/tune_n*.json"), key=lambda t: t["n"]):
        out += [(f"Command: `python benchmarks/tune_stop.py --n {t['n']}` (counterfact-train, first {t['n']} records, "
                 "one batch; perplexity on the first 20,000 tokens of wikitext-2 *validation*; known kept: of the "
                 "known_1000 facts the unedited model knows, about subjects not edited, the share still known). "
                 "Steps per fact count every round; targets and verify are seconds of those phases."), "",
                table(t), "", f"![stop tuning](../benchmarks/results/stop_tuning/tune_n{t['n']}.png)", "",
                f"File: `{t['_file']}`. Machine and commit: per configuration, in the table.", ""]
    # the paper's rule at N = 1,000 on the same records: the review's λ sweep ran it (review/n1000/cov)
    runs = sorted(load_results("stop/*/counterfact_memit_n*.json") + load_results("review/n1000/cov/counterfact_memit_n1000.json"),
                  key=lambda r: (r["n"], r["_file"]))
    if not runs:
        return out + ["*The reporting-split runs are not measured yet.*", ""]
    out += [("On counterfact-edit, one batch, `memit eval ... --retention ../shared/data/known_1000.json --perplexity "
             "../shared/data/wikitext-2-raw/wiki.test.raw` (first 20,000 tokens), with the settings in the first "
             "column:"), "",
            ("| N | settings | ES | PS | NS | Score | GE | known kept | perplexity | ‖ΔW‖/‖W‖ per layer | steps/fact "
            "| facts held (rounds) | time per phase |"), "|---" * 13 + "|"]
    for r in runs:
        u, e, hp = r["unedited"], r["edited"], r["hparams"]
        label = "paper's stop" if hp.get("stop", "paper") == "paper" else f"margin {hp['stop_margin']:g}"
        label += f", {hp.get('rounds', 1)} round(s)" + (f", ridge {hp['ridge']:g}" if hp.get("ridge") else "")
        label += f", {len(hp['prefixes'])} prefixes"
        v = r.get("verification") or {}
        held = f"{v['held']} of {r['n']} ({v['rounds_used']})" if v else "not verified"
        steps = f"{r['targets']['mean_steps']:.1f}" if "mean_steps" in r["targets"] else "not recorded"
        kept = r.get("retention", {}).get("kept")
        rel = " / ".join(f"{x['delta_rel_norm']:.2f}" for x in r["layers_info"])
        phases = ", ".join(f"{k} {x:.0f} s" for k, x in r["timings"].items() if x >= 0.5)
        out.append(f"| {r['n']} | {label} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} "
                   f"| {e.get('GE', float('nan')):.1f} | {kept:.1f} | {e.get('perplexity', float('nan')):.2f} | {rel} "
                   f"| {steps} | {held} | {phases} |")
        out.append(f"| {r['n']} | *unedited* | {fmt_ci(u, 'ES')} | {fmt_ci(u, 'PS')} | {fmt_ci(u, 'NS')} "
                   f"| {u['Score']:.1f} | {u.get('GE', float('nan')):.1f} | 100 | {u.get('perplexity', float('nan')):.2f} "
                   "| | | | |")
    missing = [n for n in (100, 1000) if n not in {r["n"] for r in runs}]
    out += ["", fmt_files(runs), ""] + ([f"*Not measured yet: N = {', '.join(f'{n:,}' for n in missing)}.*", ""]
                                        if missing else [])
    for r in (r for r in runs if r["n"] == 1000 and r["hparams"].get("stop") == "margin"):
        u, e = r["unedited"], r["edited"]
        cached = r.get("targets_from_cache")
        checks = [("ES ≥ 99", e["ES"] >= 99, f"{e['ES']:.1f}"), ("PS ≥ 88", e["PS"] >= 88, f"{e['PS']:.1f}"),
                  ("NS ≥ unedited − 3", e["NS"] >= u["NS"] - 3, f"{e['NS']:.1f} against {u['NS']:.1f}"),
                  ("known facts kept ≥ 80 %", r["retention"]["kept"] >= 80, f"{r['retention']['kept']:.1f} %"),
                  ("perplexity ≤ unedited + 15 %", e["perplexity"] <= 1.15 * u["perplexity"],
                   f"{e['perplexity']:.2f} against {u['perplexity']:.2f} (+{100 * (e['perplexity'] / u['perplexity'] - 1):.0f} %)")]
        timed = ("≤ 20 minutes", r["edit_wall_s"] <= 1200, f"{r['edit_wall_s'] / 60:.1f} min")
        hp = r["hparams"]
        out += [(f"The issue's targets at N = 1,000, for margin {hp['stop_margin']:g}, {hp['rounds']} rounds, "
                 f"{len(hp['prefixes'])} prefixes" + (f", ridge {hp['ridge']:g}" if hp.get("ridge") else "") + ": "
                 + "; ".join(f"{name}: {got}, {'met' if ok else 'missed'}" for name, ok, got in checks)
                 + (f"; time: {cached:,} target vectors were read from the cache of an earlier run, so its "
                    f"{timed[2]} is not the time of a cold edit" if cached
                    else f"; {timed[0]}: {timed[2]}, {'met' if timed[1] else 'missed'}") + "."), ""]
    return out


def peer_section() -> list[str]:
    """kmeng01/memit and memit on the same facts, back to back on one machine."""
    from peer_side_by_side import table

    runs = sorted(load_results("peer/side_by_side_n*.json"), key=lambda r: r["n"])
    if not runs:
        return ["*Not measured yet.*", ""]
    out = []
    for r in runs:
        out += [(f"Command: `python benchmarks/peer_side_by_side.py --n {r['n']}` (the first {r['n']} records of "
                 f"`{r['records']}`, one batch; both edited models scored by the peer folder's own `cf_score.py`; "
                 "the paper's code without its statistics pass, memit's whole `memit edit` process with statistics "
                 "cached)."), "", table(r), "", fmt_files([r]), ""]
    return out


def export_section() -> list[str]:
    runs = load_results("export/export.json")
    if not runs:
        return ["*Not measured yet.*", ""]
    r = runs[0]
    out = [("Command: `python benchmarks/export_sizes.py` (the first N counterfact-edit records, one batch, the "
            "default preset). Sizes in bytes; the delta is saved as factors where they are smaller than the "
            "dense matrix."), "",
           "| N | rounds | rank per layer | delta as saved | dense | LoRA exact (rank) | LoRA rank 512 (max rel. error) |",
           "|---|---|---|---|---|---|---|"]
    sized = sorted(((n, x) for n, x in r["runs"].items() if n.isdigit()), key=lambda kv: int(kv[0]))
    for n, x in sized:
        b = x["bytes"]
        cut = (f"{b['lora_rank512']:,} ({max(x['lora_rank512_rel_error'].values()):.3f})" if "lora_rank512" in b
               else "not needed")
        out.append(f"| {n} | {x['rounds_used']} | {max(x['rank'].values())} | {b['delta_as_saved']:,} ({x['saved_as']}) "
                   f"| {b['dense']:,} | {b['lora_exact']:,} ({x['lora_exact_rank']}) | {cut} |")
    cuts = [(n, x) for n, x in sized if x.get("truncated")]
    if cuts:
        out += ["", "The adapter truncated to a smaller rank (truncated SVD), merged into the base model and scored:", "",
                "| N | rank | max relative error | ES | PS | NS | Score |", "|---|---|---|---|---|---|---|"]
        for n, x in cuts:
            u = x["unedited"]
            out.append(f"| {n} | unedited | | {u['ES']:.1f} | {u['PS']:.1f} | {u['NS']:.1f} | {u['Score']:.1f} |")
            if "float" in x:
                e = x["float"]
                out.append(f"| {n} | exact ({x['lora_exact_rank']}) | 0 | {e['ES']:.1f} | {e['PS']:.1f} | {e['NS']:.1f} "
                           f"| {e['Score']:.1f} |")
            for rank, e in sorted(x["truncated"].items(), key=lambda kv: -int(kv[0])):
                out.append(f"| {n} | {rank} | {max(e['rel_error'].values()):.3f} | {e['ES']:.1f} | {e['PS']:.1f} "
                           f"| {e['NS']:.1f} | {e['Score']:.1f} |")
    for n, x in r["runs"].items():
        if "gguf_q4_1" not in x:
            continue
        what = "The demo facts" if n == "demo" else f"N = {n}"
        out += ["", (f"{what} written as GGUF and read back (ES / PS / NS / Score, and facts that hold on the "
                     "verification prompts):"), "", "| model | ES | PS | NS | Score | facts hold | file |",
                "|---|---|---|---|---|---|---|"]
        n = x["n"]
        u = x["unedited"]
        out.append(f"| unedited | {u['ES']:.1f} | {u['PS']:.1f} | {u['NS']:.1f} | {u['Score']:.1f} | | |")
        for label, key in (("edited, float", "float"), ("GGUF, edited tensors requantised to Q4_1", "gguf_q4_1"),
                           ("GGUF, edited tensors as F32", "gguf_f32")):
            e = x[key]
            size = f"{e['bytes']:,} bytes" if "bytes" in e else ""
            out.append(f"| {label} | {e['ES']:.1f} | {e['PS']:.1f} | {e['NS']:.1f} | {e['Score']:.1f} "
                       f"| {e['held']} of {n} | {size} |")
    out += ["", fmt_files([{**x, "_file": r["_file"]} for x in r["runs"].values()][:1]), ""]
    return out + llama_cpp_lines()


def llama_cpp_lines() -> list[str]:
    """The edited GGUF asked the same questions in llama.cpp's runtime and in transformers' loader."""
    runs = load_results("export/llama_cpp.json")
    if not runs:
        return []
    r = runs[0]
    out = [(f"The same files in llama.cpp's own runtime (`python benchmarks/llama_cpp_check.py --n 100`, "
            f"llama-cpp-python {r['llama_cpp_python']}) and in transformers' GGUF loader, on each fact's rewrite "
            "prompt: target_new more likely than target_true (teacher forced), and the greedy answer starting with "
            "target_new."), "",
           ("| facts | file | new > true: llama.cpp | transformers | answer starts with new: llama.cpp | transformers "
            "| same greedy answer | same preference | max NLL difference |"), "|---|---|---|---|---|---|---|---|---|"]
    for name, x in r["sets"].items():
        for kind, label in (("unedited", "unedited"), ("edited_q4_1", "edited, Q4_1"), ("edited_f32", "edited, F32")):
            c = x[kind]
            out.append(f"| {name} ({c['facts']}) | {label} | {c['llama_cpp']['new_beats_true']} "
                       f"| {c['transformers']['new_beats_true']} | {c['llama_cpp']['answer_starts_with_new']} "
                       f"| {c['transformers']['answer_starts_with_new']} | {c['same_greedy_answer']} "
                       f"| {c['same_preference']} | {c['max_nll_difference']:.2f} |")
    return out + ["", fmt_files([r]), ""]


def generated_section() -> list[str]:
    """Generated answers beside the teacher-forced scores, and what MQuAKE's multi-hop questions show."""
    runs = [r for r in load_results("generated/counterfact_*_n*.json") + load_results("stop/*/counterfact_memit_n*.json")
            if "generated" in r["edited"]]
    runs.sort(key=lambda r: (r["n"], r["method"], r["_file"]))
    out = []
    if not runs:
        out += ["*Not measured yet.*", ""]
    else:
        out += [("Command: `memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/counterfact-edit.json "
                 "--n N --method M --out benchmarks/results/generated` (`--generate both`, the default). Greedy answers, "
                 "cut at the first line or sentence; *plain*: the answer starts with the target "
                 "(neighbourhood: still starts with the true answer); *chat*: the prompt as a user turn of the chat "
                 "template (\"Complete the sentence: …\"), the answer contains the target. Rules: "
                 "`src/memit/eval/generated.py`."), "",
                "| N | method | | ES | PS | NS | gen ES | gen PS | gen NS | chat ES | chat PS | chat NS |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def label(r):
            hp = r.get("hparams") or {}
            return r["method"] + (f", ridge {hp['ridge']:g}" if hp.get("ridge") else "")
        gaps = []
        for r in runs:
            for state, e in (("unedited", r["unedited"]), ("edited", r["edited"])):
                g = e["generated"]
                cells = [fmt_ci(e, k) for k in ("ES", "PS", "NS")]
                cells += [f"{g[k]:.1f}" if g.get(k) is not None else "–"
                          for k in ("gen_ES", "gen_PS", "gen_NS", "chat_ES", "chat_PS", "chat_NS")]
                out.append(f"| {r['n']} | {label(r)} | {state} | " + " | ".join(cells) + " |")
            g = r["edited"]["generated"]
            gaps.append((r, r["edited"]["ES"] - g["gen_ES"], r["edited"]["PS"] - g["gen_PS"]))
        out += ["", "How far the generated figures sit from the teacher-forced ones, edited: "
                + "; ".join(f"{label(r)} at N = {r['n']}: ES {es:+.1f} and PS {ps:+.1f} points "
                            f"(teacher forced minus generated, plain)" for r, es, ps in gaps) + ".", "",
                fmt_files(runs), ""]
    mq = sorted((r for r in load_results("mquake/mquake_*.json") if "edited" in r), key=lambda r: r["_file"])
    if mq:
        out += ["### Multi-hop questions (MQuAKE)", "",
                (f"Command: `memit mquake --data ../shared/data/mquake/MQuAKE-hard.json --n {mq[0]['n']} "
                 "--out benchmarks/results/mquake`. MQuAKE-hard holds 429 four-hop cases of MQuAKE-CF, each with four "
                 "edits and three questions (SOURCES.md §4; how the subset was chosen is not documented, so these "
                 "figures describe that subset, not MQuAKE). A case is answered *new* (or *old*) when any of its three "
                 "questions is; single hop: the edited facts' own cloze prompts. Plain: exact at the start of the "
                 "answer; chat: contains."), "",
                ("| protocol | | single hop, teacher forced | single hop, plain | multi-hop new, plain | multi-hop old, plain "
                 "| single hop, chat | multi-hop new, chat | multi-hop old, chat |"), "|---|---|---|---|---|---|---|---|---|"]
        for r in mq:
            for label in ("unedited", "edited"):
                e = r[label]

                def cell(form, key, e=e):
                    x = (e.get(form) or {}).get(key)
                    return f"{x['rate']:.1f}" if x else "–"
                out.append(f"| {r['mode']} ({r['n']} cases) | {label} | {e['single_hop_tf']['rate']:.1f} | "
                           + " | ".join(cell(f, k) for f in ("plain", "chat")
                                        for k in ("single_hop", "multi_hop_new_any", "multi_hop_old_any"))
                           + " |")
        out += ["", fmt_files(mq), ""]
    return out


def gemma_section() -> list[str]:
    """Gemma 3 270M: counterfact-edit at N = 100 with the settings chosen on train and with the
    SmolLM2 preset as it is, the train sweep that chose them, its causal trace, and where a
    target-vector step goes beside SmolLM2's."""
    runs = sorted(load_results("gemma/*/counterfact_memit_n*.json"), key=lambda r: (r["n"], r["_file"]))
    out = []
    if not runs:
        out += ["*Not measured yet.*", ""]
    else:
        out += [("Command: `memit eval --model gemma3-270m (--preset smollm2-135m | --hparams "
                 "benchmarks/hparams/gemma3-270m.json) --dataset counterfact --data "
                 "../shared/data/counterfact/easyedit/counterfact-edit.json --n N --method memit --perplexity "
                 "../shared/data/wikitext-2-raw/wiki.test.raw --retention ../shared/data/known_1000.json "
                 "--out benchmarks/results/gemma/SETTINGS`. Generated: plain answers (see above)."), "",
                "| settings | N | | ES | PS | NS | Score | gen ES | gen PS | gen NS | known facts kept | perplexity |",
                "|---" * 12 + "|"]
        for r in runs:
            for state in ("unedited", "edited"):
                e = r[state]
                g = e.get("generated") or {}
                gen = [f"{g[k]:.1f}" if g.get(k) is not None else "–" for k in ("gen_ES", "gen_PS", "gen_NS")]
                kept = fmt_ci(r["retention"], "kept") if state == "edited" and r.get("retention") else "–"
                out.append(f"| {Path(r['_file']).parent.name} | {r['n']} | {state} | "
                           + " | ".join(fmt_ci(e, k) for k in ("ES", "PS", "NS")) + f" | {e['Score']:.1f} | "
                           + " | ".join(gen) + f" | {kept} | {e.get('perplexity', float('nan')):.2f} |")
        out += ["", fmt_files(runs), ""]
    sweep = load_results("gemma_tuning/tune_gemma3-270m_n*.json")
    if sweep:
        t = sweep[0]
        u = t["unedited"]
        out += [(f"The settings were chosen on counterfact-train (first {t['n']} records; `python benchmarks/tune_gemma.py "
                 f"--n {t['n']}`), starting from the SmolLM2 preset. Unedited: ES {u['ES']:.0f}, PS {u['PS']:.0f}, "
                 f"NS {u['NS']:.0f}, perplexity (wikitext-2 validation) {u['perplexity']:.2f}."), "",
                "| configuration | changed from the SmolLM2 preset | ES | PS | NS | Score | known kept | perplexity | held | commit |",
                "|---" * 10 + "|"]
        for name, r in t["runs"].items():
            e, v = r["edited"], r["verification"]
            kept = f"{e['known_kept']:.1f}" if e.get("known_kept") is not None else "–"
            out.append(f"| {name} | `{json.dumps(r['changes'])}` | {e['ES']:.0f} | {e['PS']:.0f} | {e['NS']:.0f} | "
                       f"{e['Score']:.1f} | {kept} | {e['perplexity']:.2f} | {v['held']} of {v['held'] + v['failed']} | "
                       f"{str(r['machine'].get('commit'))[:8]} |")
        out += ["", f"File: `{t['_file']}`.", ""]
    trace = load_results("gemma/trace/trace.json")
    if trace:
        t = trace[0]
        used = sorted({tuple(r["hparams"]["layers"]) for r in runs})
        out += [(f"Causal tracing (`memit trace --model gemma3-270m --facts ../shared/data/known_1000.json --n "
                 f"{t['n_candidates']} --samples {t['samples']} --window {t['window']} --out "
                 f"benchmarks/results/gemma/trace`): {t['n_traced']} of {t['n_candidates']} facts known and traced; "
                 f"suggested band **{t['suggested_band']}**, against the band edited above: "
                 + ", ".join(str(list(b)) for b in used) + "."), "",
                "![Gemma causal trace](../benchmarks/results/gemma/trace/trace.png)", "",
                f"File: `{t['_file']}`. Machine: {fmt_machine(t['machine'])}.", ""]
    prof = load_results("speed/profile.json") + load_results("speed/profile_gemma3-270m.json")
    if len(prof) == 2 and all("lm_head_s" in p for p in prof):
        out += ["One target-vector step (`python benchmarks/profile_step.py --n 10 [--model gemma3-270m]`):", "",
                "| model | vocabulary | blocks above the edited layer | step | LM head (logits, log-softmax, backward) |",
                "|---|---|---|---|---|"]
        for p in prof:
            out.append(f"| {p['model']} | {p['vocab']:,} | {p['blocks_above']} | {p['step_wall_s']:.2f} s | "
                       f"{p['lm_head_s']:.2f} s ({100 * p['lm_head_share']:.0f} %) |")
        out += ["", fmt_files(prof), ""]
    return out


def speed_section() -> list[str]:
    """Phase times of the fast path against the in-project reference loop, and the issue's targets."""
    speed = sorted(load_results("speed/speed_n*.json"), key=lambda r: r["n"])
    if not speed:
        return ["*Not measured yet.*", ""]
    lines = ["Command: `python benchmarks/speed.py --n " + " ".join(str(r["n"]) for r in speed) + "` (counterfact-train "
             "requests; statistics cached for the edit, measured separately by a fresh pass)", "",
             ("| N | targets: memit | targets: reference loop | speed-up | keys | solve | edits/s | "
              "ES/PS/NS memit | ES/PS/NS reference | peak RSS |"), "|---" * 10 + "|"]
    for r in speed:
        f, ref = r["fast"], r.get("reference")
        q1 = f["quality"]
        q2 = ref["quality"] if ref else None
        lines.append(f"| {r['n']} | {f['phases']['targets']:.1f} s | "
                     + (f"{ref['targets_s']:.1f} s | ×{r['speedup_targets']:.1f} | " if ref else "not run | – | ")
                     + f"{f['phases']['keys']:.1f} s | {f['phases']['solve']:.2f} s | {r['edits_per_s_fast']:.3f} | "
                     f"{q1['ES']:.0f}/{q1['PS']:.0f}/{q1['NS']:.0f} | "
                     + (f"{q2['ES']:.0f}/{q2['PS']:.0f}/{q2['NS']:.0f}" if q2 else "–") + f" | {r['peak_rss_mb']:.0f} MB |")
    st = speed[-1]["stats"]
    drift = st.get("drift_last_quarter") or {}
    lines += ["", (f"Statistics: one pass for all {st['layers']} edited layers, {st['tokens_per_s']:.0f} tokens/s; "
                   f"{st['tokens_through_model']} tokens went through the model where one pass per layer would send "
                   f"{st['tokens_one_pass_per_layer']} (×{st['tokens_one_pass_per_layer'] / st['tokens_through_model']:.0f} "
                   "fewer)." + (" Relative change of C₀ over the last quarter of that small budget, per layer: "
                   + ", ".join(f"{k}: {v:.3f}" for k, v in drift.items())
                   + " (`memit stats` prints the same for the preset's budget)." if drift else ""))]
    big = [r for r in load_results("scaling/counterfact_memit_n1000.json")]
    if big:
        t = big[0]["timings"]
        lines += ["", (f"1,000 edits (the scaling run's N = 1000 point, statistics cached): {big[0]['edit_wall_s']:.0f} s "
                       f"= {big[0]['edit_wall_s'] / 60:.0f} min against the 15-minute target; target vectors "
                       f"{t['targets']:.0f} s, keys {t['keys']:.0f} s, solve {t['solve']:.1f} s. The target-vector "
                       "phase is mostly matrix products in the blocks above the edited layer (next section), so the target would "
                       "need fewer optimisation steps or prompts per fact.")]
    return lines + ["", "![speed](../benchmarks/results/speed/speed.png)", ""] + edit_phases_lines()


def edit_phases_lines() -> list[str]:
    """The same edit timed on two commits: what a change to one phase bought."""
    runs = sorted(load_results("speed/edit_phases_n*.json"), key=lambda r: r["_file"])
    if not runs:
        return []
    lines = ["### Phases of one edit, by commit", "",
             (f"Command: `python benchmarks/edit_phases.py --n {runs[0]['n']} --repeat {len(runs[0]['timings_s'])}`, "
              "with `PYTHONPATH` at each commit's `src` (counterfact-edit, first records; target vectors and "
              "statistics from the cache, so keys, solve and diagnostics are what is timed; the background runs "
              "were paused)."), "",
             "| commit | keys (each run) | solve | diagnostics | file |", "|---|---|---|---|---|"]
    for r in runs:
        t = r["timings_s"]
        lines.append(f"| {(r['machine']['commit'] or '?')[:7]} | " + " / ".join(f"{x['keys']:.1f} s" for x in t)
                     + f" | {t[-1]['solve']:.1f} s | {t[-1]['diagnostics']:.1f} s | `{r['_file']}` |")
    return lines + ["", f"Machine: {_machine(runs[0]['machine'])}.", ""]


def page() -> str:
    """docs/results.md as the committed result files make it (the PNGs are drawn on the way)."""
    out = ["# Results", "",
           ("Every table here is generated by `python benchmarks/report.py` from the JSON files under "
           "`benchmarks/results/`; each section names the command that wrote them. Rates are in %, with a "
           "bootstrap 95 % interval over facts in brackets. Model: SmolLM2-135M-Instruct (GGUF Q4_1, "
           "dequantised to float32), preset `smollm2-135m` unless stated."), ""]
    out += ["## CounterFact (counterfact-edit, the reporting split)", ""]
    out += scaling_section("counterfact", "scaling",
                           "memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/"
                           "counterfact-edit.json --n {ns} --out benchmarks/results/scaling")
    out += ["## zsRE", ""]
    out += scaling_section("zsre", "scaling",
                           "memit eval --dataset zsre --data ../shared/data/zsre/zsre_mend_eval_portability_gpt4.json"
                           " --n {ns} --out benchmarks/results/scaling")
    out += ["## CounterFact train split, first 100 records (the core issue's end-to-end check)", ""]
    out += scaling_section("counterfact", "train100",
                           "memit eval --dataset counterfact --data ../shared/data/counterfact/easyedit/"
                           "counterfact-train.json --n {ns} --out benchmarks/results/train100")
    trace = load_results("trace/trace.json")
    out += ["## Causal tracing", ""]
    if trace:
        t = trace[0]
        out += [(f"Command: `memit trace --facts ../shared/data/known_1000.json --n {t['n_candidates']} "
                 f"--samples {t['samples']} --out benchmarks/results/trace`"), "",
                (f"{t['n_traced']} of {t['n_candidates']} candidate facts are predicted (top-1) by the model and were "
                f"traced; noise σ = {t['noise_sigma']:.3f}. Suggested band (width 6, largest MLP effect at the "
                f"last subject token): **{t['suggested_band']}**."), "",
                "![causal trace](../benchmarks/results/trace/trace.png)", "",
                f"File: `{t['_file']}`. Machine: {fmt_machine(t['machine'])}.", ""]
    out += ["## Layer-band ablation (N = 100)", ""] + bands_section()
    out += ["## MEMIT against ROME and FT-L (one batch)", ""] + methods_section()
    out += ["## Sequential editing: MEMIT, MEMIT-seq and AlphaEdit over 2,000 edits", ""] + sequential_section()
    out += ["## Sequential editing with the default preset (margin stop, verification, ridge)", ""]
    out += margin_sequence_section()
    out += ["## AlphaEdit's null space on SmolLM2", ""] + alphaedit_section()
    out += ["## The fine-tuning baselines on SmolLM2", ""] + ft_tuning_section()
    out += ["## Per-fact stopping, verification and re-edit rounds", ""] + stop_section()
    out += ["## Against the paper's own code, in one run", ""] + peer_section()
    out += ["## Shipping an edit: delta sizes, LoRA adapters, GGUF", ""] + export_section()
    out += ["## Generated answers, chat prompts and multi-hop questions", ""] + generated_section()
    out += ["## A second model: Gemma 3 270M", ""] + gemma_section()
    tune = load_results("preset/tune_n*.json")
    out += ["## How the SmolLM2 preset was chosen", "", "See [presets.md](presets.md).", ""]
    if tune:
        t = tune[0]
        out += ["Command: `python benchmarks/tune_preset.py --n 50`", "",
                (f"counterfact-train, first {t['n']} records; unedited ES/PS/NS "
                f"{t['unedited']['ES']:.0f} / {t['unedited']['PS']:.0f} / {t['unedited']['NS']:.0f}."), "",
                "| layers | λ per d_ff (λ) | ES | PS | NS | Score | ‖ΔW‖/‖W‖ last layer |", "|---|---|---|---|---|---|---|"]
        for r in t["runs"].values():
            e = r["edited"]
            out.append(f"| {r['layers'][0]}–{r['layers'][-1]} | {r['lam_per_dff']} ({r['lambda']:.0f}) | {e['ES']:.0f} "
                       f"| {e['PS']:.0f} | {e['NS']:.0f} | {e['Score']:.1f} | {r['layers_info'][-1]['delta_rel_norm']:.3f} |")
        out += ["", "![preset tuning](../benchmarks/results/preset/tune_n50.png)", ""]
    out += ["## Speed", ""] + speed_section()
    prof = load_results("speed/profile.json")
    if prof:
        p = prof[0]
        out += ["### One optimisation step", "",
                (f"Command: `python benchmarks/profile_step.py --n {p['n_requests']}`: one step on {p['rows']} prompt rows "
                 f"({p['suffix_tokens_real']} real suffix tokens after a {p['prefix_tokens_cached']}-token cached prefix) "
                 f"takes {p['step_wall_s']:.2f} s for {p['gflop_per_step']:.0f} GFLOP of matrix products "
                 f"({p['achieved_gflops']:.0f} GFLOP/s); a plain 2048² float32 product reached "
                 f"{p['matmul_peak_gflops']:.0f} GFLOP/s in the same run: the step runs at "
                 f"{100 * p['achieved_gflops'] / p['matmul_peak_gflops']:.0f} % of that speed, "
                 f"{p['step_wall_s'] / p['lower_bound_s']:.1f}× the FLOP lower bound. "
                 + ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in p["top_ops"][:3]) + "."), ""]
    gpu = load_results("device/gpu_speed_h100.json")
    check = load_results("device/gpu_check_h100.json")
    if gpu:
        g = gpu[0]
        out += ["### On an H100 (target-vector phase only)", "",
                ("Command: `python benchmarks/gpu_speed.py --model-dir DIR --requests cf100.json --n 10 100` "
                f"({g['note']}: only the times mean anything)."), "",
                "| N | memit (fast path) | reference loop | speed-up |", "|---|---|---|---|"]
        for n in sorted({r["n"] for r in g["rows"]}):
            f = next(r for r in g["rows"] if r["n"] == n and r["path"] == "fast")
            ref = next(r for r in g["rows"] if r["n"] == n and r["path"] == "reference")
            out.append(f"| {n} | {f['seconds']:.1f} s | {ref['seconds']:.1f} s | ×{ref['seconds'] / f['seconds']:.1f} |")
        out += ["", f"File: `{g['_file']}`. Machine: {fmt_machine(g['machine'])}.", ""]
    if check:
        c = check[0]
        fp32 = [r for r in c["rows"] if r["dtype"] == "torch.float32"]
        out += ["## Same edit on CPU and CUDA", "",
                ("Command: `python benchmarks/gpu_check.py` on an H100: the delta of a CUDA edit against the CPU edit "
                f"in float32, for all {len(fp32)} architectures: largest relative difference "
                f"{max(r['max_rel_diff_vs_cpu_fp32'] for r in fp32):.1e}. (bf16 edits differ from float32 by 2–18 % "
                "on these tiny random models, on CPU as on CUDA.)"), "", f"File: `{c['_file']}`.", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    (ROOT / "docs" / "results.md").write_text(page())
    print("wrote docs/results.md")


if __name__ == "__main__":
    main()
