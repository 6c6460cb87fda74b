"""The generated blocks of docs/review.md (the answers to the paper's review), one function each,
and the ``memit eval`` runs whose result files they read."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from memit.eval.metrics import counterfact_strata
from memit.eval.results import sequence_label

from .figures import spectrum_plot, sweep_plot
from .load import RES as ALL
from .load import ROOT, fmt_ci, fmt_files, fmt_opt, load_one, load_results
from .page import Figure
from .sequential import SEQ_COMMAND, finished, progress_note, stopped_note

RES = ALL / "review"
CF = "../shared/data/counterfact/easyedit/counterfact-edit.json"
PPL = "--perplexity ../shared/data/wikitext-2-raw/wiki.test.raw"
BASE = f"memit eval --dataset counterfact --data {CF}"

# name → (arguments after BASE, result file). Ordered by what the page needs first.
RUNS: dict[str, tuple[str, str]] = {
    "cov-100": (f"--n 100 {PPL} --diagnostics full --retention ../shared/data/known_1000.json --out {{res}}/preservation/cov",
                "preservation/cov/counterfact_memit_n100.json"),
    "identity-100": ((f"--n 100 {PPL} --match-norm {{res}}/preservation/cov/counterfact_memit_n100.json "
                     "--out {res}/preservation/identity"), "preservation/identity/counterfact_memit_n100.json"),
    "none-100": (f"--n 100 {PPL} --preservation none --out {{res}}/preservation/none",
                 "preservation/none/counterfact_memit_n100.json"),
    **{f"lambda{lam}-100": (f"--n 100 {PPL} --lambda {lam} --out {{res}}/lambda/{lam}",
                            f"lambda/{lam}/counterfact_memit_n100.json") for lam in (100, 1000, 15000, 100000)},
    **{f"random{seed}-100": (f"--n 100 --sample random --seed {seed} --out {{res}}/random",
                             f"random/counterfact_memit_n100_random{seed}.json") for seed in (1, 2, 3)},
    "cov-500": ("--n 500 --no-fluency --diagnostics full --out {res}/stability", "stability/counterfact_memit_n500.json"),
    # N = 1,000: about 1.5 h of target optimisation on 2 CPU cores, shared by the four runs
    "cov-1000": (f"--n 1000 {PPL} --diagnostics full --retention ../shared/data/known_1000.json --out {{res}}/n1000/cov",
                 "n1000/cov/counterfact_memit_n1000.json"),
    "oracle-1000": ("--n 1000 --layers 0,1,2,3,4,5 --out {res}/n1000/oracle", "n1000/oracle/counterfact_memit_n1000.json"),
    "identity-1000": ((f"--n 1000 {PPL} --match-norm {{res}}/n1000/cov/counterfact_memit_n1000.json "
                       "--out {res}/n1000/identity"), "n1000/identity/counterfact_memit_n1000.json"),
    "none-1000": (f"--n 1000 {PPL} --preservation none --out {{res}}/n1000/none", "n1000/none/counterfact_memit_n1000.json"),
    # the λ sweep again at N = 1,000: the target vectors are cov-1000's (λ does not change them)
    **{f"lambda{lam}-1000": (f"--n 1000 {PPL} --lambda {lam} --out {{res}}/n1000/lambda/{lam}",
                             f"n1000/lambda/{lam}/counterfact_memit_n1000.json") for lam in (100, 1000, 15000, 100000)},
}


def command(name: str, res: str = "benchmarks/results/review") -> str:
    return f"{BASE} {RUNS[name][0].format(res=res)}"


def _load(name: str) -> dict | None:
    return load_one(f"review/{RUNS[name][1]}")


def _norm(r: dict) -> str:
    return " / ".join(f"{x['delta_rel_norm']:.3f}" for x in r["layers_info"])


def _cond_nonzero(eig: list[float], rank: int) -> float:
    """cond of KKᵀ on its range: largest over smallest of its ``rank`` nonzero eigenvalues (KKᵀ is
    d_ff × d_ff of rank ≤ N, so its plain condition number is infinite whenever N < d_ff)."""
    ev = sorted(eig, reverse=True)[:rank]
    return ev[0] / ev[-1]


def _worst_cond(r: dict) -> dict | None:
    """The edited layer whose solve is worst conditioned (None with λ = 0, where no system is solved)."""
    return max((x for x in r["layers_info"] if x.get("cond") is not None), key=lambda x: x["cond"], default=None)


def _case_es(case: dict) -> float:
    return sum(x["new"] < x["true"] for x in case["rewrite"]) / len(case["rewrite"])


def stability_section() -> list[str]:
    """Point 1: conditioning of the solve, spectra, overlap of update directions, and whether overlap predicts failure."""
    runs = [(name, r) for name in ("cov-100", "cov-500", "cov-1000") if (r := _load(name)) and r.get("spectra")]
    if not runs:
        return ["*Not run yet.*", ""]
    lines = [("| N | layer | cond(λC₀ + KKᵀ) | cond(KKᵀ) on its range (rank) | update-direction overlap: mean / p95 / max "
              "| ‖ΔW‖/‖W‖ |"), "|---" * 6 + "|"]
    for _, r in runs:
        for x in r["layers_info"]:
            s, o = r["spectra"][str(x["layer"])], x["update_overlap"]
            lines.append(f"| {r['n']} | {x['layer']} | {x['cond']:.2e} | {_cond_nonzero(s['eig_kk'], x['rank_kk']):.2e} "
                         f"({x['rank_kk']}) | {o['mean']:.3f} / {o['p95']:.3f} / {o['max']:.3f} | {x['delta_rel_norm']:.3f} |")
    lines += ["", ("Overlap of a fact's update direction with the others (its largest |cosine| with any other "
                   "column of (λC₀ + KKᵀ)⁻¹K, the largest over layers), against whether its edit worked:"), "",
              "| N | facts in the top overlap decile: n, overlap ≥, ES | the rest: n, ES |", "|---|---|---|"]
    for _, r in runs:
        ov = [q["max_update_overlap"] for q in r["per_request"]]
        es = [_case_es(c) for c in r["per_case"]["edited"]]
        order = sorted(range(len(ov)), key=lambda i: -ov[i])
        k = max(1, len(ov) // 10)
        top, rest = order[:k], order[k:]
        lines.append(f"| {r['n']} | {k}, {ov[top[-1]]:.3f}, {100 * sum(es[i] for i in top) / k:.1f} | "
                     f"{len(rest)}, {100 * sum(es[i] for i in rest) / len(rest):.1f} |")
    big = runs[-1][1]
    li = big["layers_info"]
    worst = _worst_cond(big)
    lines += ["", (f"Against the rebuttal (condition numbers below 5·10³ and update overlap below 0.15 at 1,000 edits): "
                   f"at N = {big['n']} the largest cond(λC₀ + KKᵀ) is {worst['cond']:.1e} (layer {worst['layer']}), "
                   f"{sum(x['cond'] > 5e3 for x in li)} of {len(li)} layers are above 5·10³; the mean overlap is "
                   f"{min(x['update_overlap']['mean'] for x in li):.2f}–{max(x['update_overlap']['mean'] for x in li):.2f} "
                   f"per layer, the 95th percentile up to {max(x['update_overlap']['p95'] for x in li):.2f} and the "
                   f"largest {max(x['update_overlap']['max'] for x in li):.2f}.")]
    fig = Figure(RES / "spectra.png", partial(spectrum_plot, [r for _, r in runs], [f"N = {r['n']}" for _, r in runs]),
                 "spectra")
    lines += ["", fig, "",
              "Commands: " + "; ".join(f"`{command(name)}`" for name, _ in runs) + ".",
              fmt_files([r for _, r in runs]), ""]
    return lines


def _name(r: dict) -> str:
    """The RUNS entry that wrote a loaded result."""
    return next(n for n in RUNS if RUNS[n][1] == str(Path(r["_file"]).relative_to(RES.relative_to(ROOT))))


def preservation_section() -> list[str]:
    """Point 3: λC₀ against λI (same ‖ΔW‖ per layer), λ = 0, and a λ sweep, at N = 100 and 1,000."""
    lines = [("| N | preservation | ES | PS | NS | Score | GE | wikitext-2 test perplexity | ‖ΔW‖/‖W‖ per layer (3 … 8) | "
             "largest cond | command |"), "|---" * 11 + "|"]
    files = []
    for n in (100, 1000):
        rows = [(label, _load(f"{name}-{n}")) for label, name in (
            ("full MEMIT, λC₀ (λ = 1,536)", "cov"), ("C₀ → I, λ per layer matching ‖ΔW‖", "identity"),
            ("λ = 0 (minimum-norm, edits only)", "none"))]
        rows += [(f"λC₀, λ = {int(name[6:name.rindex('-')]):,}", _load(name)) for name in RUNS
                 if name.startswith("lambda") and name.endswith(f"-{n}")]
        rows = [(label, r) for label, r in rows if r]
        if not rows:
            continue
        u = rows[0][1]["unedited"]
        lines.append(f"| {n} | unedited | {fmt_ci(u, 'ES')} | {fmt_ci(u, 'PS')} | {fmt_ci(u, 'NS')} | {u['Score']:.1f} | "
                     f"{fmt_opt(u, 'GE')} | {fmt_opt(u, 'perplexity', '.2f')} | | | |")
        for label, r in rows:
            e = r["edited"]
            worst = _worst_cond(r)
            cond = f"{worst['cond']:.1e}" if worst else "–"
            lines.append(f"| {n} | {label} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} | "
                         f"{fmt_opt(e, 'GE')} | {fmt_opt(e, 'perplexity', '.2f')} | {_norm(r)} | "
                         f"{cond} | `{command(_name(r))}` |")
        files += [r for _, r in rows]
    if not files:
        return ["*Not run yet.*", ""]
    for n in (100, 1000):
        names = (f"none-{n}", f"cov-{n}", *(x for x in RUNS if x.startswith("lambda") and x.endswith(f"-{n}")))
        sweep = [(r["lambda"], r) for name in names if (r := _load(name))]
        if len(sweep) > 2:
            draw = partial(sweep_plot, [r for _, r in sweep], [lam for lam, _ in sweep], "λ (C₀ per token; 1,536 = preset)")
            lines += ["", Figure(RES / ("lambda_sweep.png" if n == 100 else f"lambda_sweep_n{n}.png"), draw,
                                 f"λ sweep, N = {n}")]
            lam, top = max(sweep, key=lambda x: x[1]["edited"]["Score"])
            lines += ["", (f"N = {n}: the best Score of the sweep is {top['edited']['Score']:.1f} at λ = {lam:,.0f} "
                           f"(perplexity {fmt_opt(top['edited'], 'perplexity', '.2f')} against "
                           f"{fmt_opt(top['unedited'], 'perplexity', '.2f')} unedited).")]
    for n in (100, 1000):
        cov = _load(f"cov-{n}")
        for name, what in ((f"identity-{n}", "C₀ → I at the same ‖ΔW‖ per layer"), (f"none-{n}", "λ = 0")):
            r = _load(name)
            if cov and r:
                d = {k: r["edited"].get(k, float("nan")) - cov["edited"].get(k, float("nan"))
                     for k in ("ES", "PS", "NS", "Score", "GE", "perplexity")}
                lines += ["", (f"N = {n}, {what} against full MEMIT: ES {d['ES']:+.1f}, PS {d['PS']:+.1f}, "
                               f"NS {d['NS']:+.1f}, Score {d['Score']:+.1f}, GE {d['GE']:+.1f}, "
                               f"perplexity {d['perplexity']:+.2f}.")]
        ident = _load(f"identity-{n}")
        if ident:
            lams = ", ".join(f"{x['lambda']:.3g}" for x in ident["layers_info"])
            lines += ["", f"N = {n}, λ per layer found for C₀ → I: {lams} (0: ridge could not spend the budget)."]
    return lines + ["", fmt_files(files), ""]


def apriori_section() -> list[str]:
    """Point 2: the band fixed on train data (the preset) against the best band on the edit split itself."""
    preset = _load("cov-100")
    bands = load_results("bands/L*/counterfact_memit_n100.json")
    if not preset or not bands:
        return ["*Not run yet.*", ""]

    def band(r: dict) -> str:
        return f"{r['hparams']['layers'][0]}–{r['hparams']['layers'][-1]}"

    oracle = max(bands + [preset], key=lambda r: r["edited"]["Score"])
    lines = [("The a-priori band is the preset's, 3–8, fixed before any edit-split run from counterfact-train only "
              "(`python benchmarks/tune_preset.py --n 50`: 3–8 and 1–6 best on train, see [presets.md](presets.md)) and "
              "causal tracing on known facts (`memit trace`, suggests 0–5). The oracle is the best band on the first 100 "
              "records of counterfact-edit itself, among the bands of the layer-band ablation "
              "([results.md](results.md#layer-band-ablation-n--100))."), "",
             "| band | how chosen | ES | PS | NS | Score | GE |", "|---|---|---|---|---|---|---|"]
    for r in sorted(bands + [preset], key=lambda r: r["hparams"]["layers"][0]):
        how = "a priori (train split)" if r is preset else ("oracle (best on the edit split)" if r is oracle else "")
        e = r["edited"]
        lines.append(f"| {band(r)} | {how} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} | "
                     f"{fmt_opt(e, 'GE')} |")
    gap = oracle["edited"]["Score"] - preset["edited"]["Score"]
    lines += ["", (f"Gap at N = 100: the oracle band {band(oracle)} scores {gap:.1f} Score points above the a-priori "
                   f"band {band(preset)}.")]
    files = [preset, *bands]
    big = [r for r in (_load("cov-1000"), _load("oracle-1000")) if r]
    if len(big) == 2:
        a, o = big
        lines += ["", "At N = 1,000 (the oracle band of N = 100, not re-searched at 1,000):", "",
                  "| band | ES | PS | NS | Score | GE | largest cond(λC₀ + KKᵀ) (layer) | command |", "|---" * 8 + "|"]
        for r in big:
            e = r["edited"]
            worst = _worst_cond(r)
            lines.append(f"| {band(r)} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} | "
                         f"{fmt_opt(e, 'GE')} | {worst['cond']:.1e} ({worst['layer']}) | `{command(_name(r))}` |")
        lines += ["", f"Gap at N = 1,000: {o['edited']['Score'] - a['edited']['Score']:+.1f} Score points (oracle − a priori)."]
        files += big
    return lines + ["", fmt_files(files), ""]


def random_section() -> list[str]:
    """Point 4: the first N against random samples, every request counted, split by difficulty."""
    rows = [(label, r) for label, name in [("first 100", "cov-100")] + [(f"random, seed {s}", f"random{s}-100")
                                                                       for s in (1, 2, 3)] if (r := _load(name))]
    if not rows:
        return ["*Not run yet.*", ""]
    lines = [("Every selected request is edited and counted; nothing is filtered or retried. \"Failed edits\": "
              "requests whose rewrite prompt still prefers target_true after the edit. Hard facts: the unedited model "
              "preferred target_true; easy: it already preferred target_new."), "",
             "| selection | ES | PS | NS | Score | failed edits | hard: n, ES, PS | easy: n, ES, PS | command |",
             "|---" * 9 + "|"]
    for label, r in rows:
        e = r["edited"]
        st = r.get("strata") or counterfact_strata(r["per_case"]["unedited"], r["per_case"]["edited"])

        def cell(g: dict) -> str:
            return f"{g['n']}, {g['ES']:.1f}, {g['PS']:.1f}" if g["n"] else "0"
        lines.append(f"| {label} | {fmt_ci(e, 'ES')} | {fmt_ci(e, 'PS')} | {fmt_ci(e, 'NS')} | {e['Score']:.1f} | "
                     f"{st['failed_edits']} | {cell(st['hard'])} | {cell(st['easy'])} | `{command(_name(r))}` |")
    return lines + ["", fmt_files([r for _, r in rows]), ""]


# "Well below" the unedited model, as this page decides it: more than a tenth of what the model knew is
# lost, i.e. the whole 95 % interval of the share still known lies under this.
WELL_BELOW = 90.0


def _well_below(t: dict) -> bool:
    return t.get("kept") is not None and t["kept_ci95"][1] < WELL_BELOW


def retention_verdict(rows: list[dict], seqs: list[dict]) -> list[str]:
    """The review's question in one paragraph: does retention fall well below the baseline, and from which N."""
    said = []
    if rows:
        first = next((r["n"] for r in rows if _well_below(r["retention"])), None)
        kept = ", ".join(f"{r['n']:,} edits keep {fmt_ci(r['retention'], 'kept')}" for r in rows)
        sizes = " and ".join(f"{r['n']:,}" for r in rows)
        said.append(f"One batch: {kept}, so well below from N = {first:,} (sizes measured: {sizes})"
                    if first else f"One batch: {kept}, not well below at any size measured")
    for r in seqs:
        pts = [p for p in r["points"] if p.get("retention", {}).get("kept") is not None and p["edits"]]
        first = next((p for p in pts if _well_below(p["retention"])), None)
        last = pts[-1] if pts else None
        if not last:
            continue
        said.append(f"{sequence_label(r)} in batches of {r['batch_size']}: "
                    + (f"well below from {first['edits']:,} edits ({fmt_ci(first['retention'], 'kept')})"
                       if first else "not well below") + f", {last['retention']['kept']:.1f} % after {last['edits']:,}")
    if not said:
        return []
    return [("**Does retention fall well below the baseline?** The unedited model keeps, by definition, 100 % of "
             "the known facts it knows; \"well below\" here means more than a tenth of them lost (the whole 95 % "
             f"interval of the share still known under {WELL_BELOW:.0f} %). " + "; ".join(said) + "."), ""]


def retention_section() -> list[str]:
    """Point 5: known facts (minus edited subjects) the model still gets right after one large batch
    and after many sequential batches, and zsRE's unrelated ``loc`` questions after zsRE edits and
    after the sequential CounterFact edits."""
    rows = [r for r in (_load("cov-100"), _load("cov-1000")) if r and "retention" in r]
    seqs = [r for r in load_results("sequential/counterfact_*_seq*.json") if "retention" in r["points"][-1]]
    if not rows and not seqs:
        return ["*Not run yet.*", ""]
    lines = retention_verdict(rows, seqs) + [
        "| edit | known facts scored | accuracy unedited → edited | of those known unedited, still known | command |",
        "|---|---|---|---|---|"]
    for r in rows:
        t = r["retention"]
        lines.append(f"| MEMIT, one batch of {r['n']} | {t['facts']} | {t['accuracy_unedited']:.1f} → "
                     f"{t['accuracy_edited']:.1f} | {fmt_ci(t, 'kept')} of {t['known_unedited']} | `{command(_name(r))}` |")
    for r in seqs:
        t, last = r["points"][-1]["retention"], r["points"][-1]
        note = stopped_note(r)
        done = f" ({note})" if note else "" if finished(r) else f" ({progress_note(r)})"
        lines.append(f"| {sequence_label(r)}, {last['edits']} edits in batches of {r['batch_size']}{done} | {t['facts']} | "
                     f"{t['accuracy_unedited']:.1f} → {t['accuracy_edited']:.1f} | "
                     f"{fmt_ci(t, 'kept') if t['kept'] is not None else '–'} of {t['known_unedited']} | "
                     f"`{SEQ_COMMAND.replace(' M ', ' ' + r['method'] + ' ')}` |")
    zsre = sorted(load_results("scaling/zsre_memit_n*.json"), key=lambda r: r["n"])
    if zsre:
        lines += ["", ("zsRE's unrelated questions (`loc`, one per record: the share of the answer's tokens that are "
                       "the model's top-1 prediction, teacher-forced), after a batch of N zsRE edits (`memit eval --dataset zsre --data "
                       "../shared/data/zsre/zsre_mend_eval_portability_gpt4.json --n N --out benchmarks/results/scaling`):"),
                  "", "| N | loc accuracy unedited → edited |", "|---|---|"]
        lines += [f"| {r['n']} | {r['unedited']['specificity']:.1f} → {fmt_ci(r['edited'], 'specificity')} |" for r in zsre]
    loc = load_results("sequential/zsre_loc.json")
    if loc:
        lines += ["", ("The same loc questions (first " f"{loc[0]['n']} records) after the sequential CounterFact edits, "
                       "scored afterwards on the models rebuilt from the edit journals (`python benchmarks/seq_loc.py "
                       "--dir benchmarks/results/sequential --every 5`, file `benchmarks/results/sequential/zsre_loc.json`; for "
                       "the runs made on a GPU, by `benchmarks/gpu_seq.sh` there, where their journals are; each point "
                       "records its machine):"),
                  "", "| method | edits so far | loc accuracy |", "|---|---|---|"]
        for method, points in loc[0]["runs"].items():
            lines += [f"| {method} | {p['edits']} | {fmt_ci(p, 'loc')} |"
                      for p in sorted(points.values(), key=lambda p: p["edits"])]
        lines += ["", "![zsRE loc after sequential edits](../benchmarks/results/sequential/zsre_loc.png)"]
    files = rows + seqs + zsre
    return lines + ["", fmt_files(files), ""]


def missing_section() -> list[str]:
    """The listed runs that have no result file yet, and the sequences point 5 still waits for."""
    missing = [name for name in RUNS if not (RES / RUNS[name][1]).exists()]
    done = {sequence_label(r) for r in load_results("sequential/counterfact_*_seq*.json")
            if finished(r) and "retention" in r["points"][-1]}
    seq_missing = [m for m in ("memit", "memit-seq", "alphaedit", "alphaedit (base C₀)") if m not in done]
    out = ["## Not measured yet", ""] if missing or seq_missing else []
    if missing:
        out += [("These listed runs have no result file yet (`python benchmarks/review.py run "
                 + " ".join(missing) + "` makes them):"), ""]
        out += [f"- `{name}`: `{command(name)}`" for name in missing]
    if seq_missing:
        out += ["", (f"Retention after the 2,000 sequential edits (point 5) of {', '.join(seq_missing)}: "
                     f"`{SEQ_COMMAND}` with M each of these (\"(base C₀)\": add `--sequential-stats base`). A run "
                     "resumes from the journal beside its result file; where the journal is gone it refuses, and the "
                     "run starts again in a new file."), ""]
    return out


# The page's generated blocks, by the name their markers carry in docs/review.md.
BLOCKS = {"stability": stability_section, "apriori": apriori_section, "preservation": preservation_section,
          "random": random_section, "retention": retention_section, "missing": missing_section}
