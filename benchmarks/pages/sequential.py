"""Blocks of docs/results.md on sequential editing, and how a sequence run's state is read."""

from __future__ import annotations

from memit.eval.results import sequence_label

from .load import fmt_ci, fmt_files, fmt_opt, load_results

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
                         f"{fmt_opt(p, 'perplexity', '.2f')} | {kept} | {took} |")
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
                         f"{fmt_opt(p, 'perplexity', '.2f')} | {kept} |")
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
