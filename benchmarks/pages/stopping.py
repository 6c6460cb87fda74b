"""Blocks of docs/results.md on per-fact stopping and verification, and the run beside the paper's code."""

from __future__ import annotations

from .load import fmt_ci, fmt_files, fmt_opt, load_results
from .sweeps import peer_table, stop_table


def stop_section() -> list[str]:
    """Per-fact stopping, verification and rounds: the sweep on train, then the chosen settings
    beside the paper's rule on the reporting split, with every figure the issue asks for."""
    out = []
    for t in sorted(load_results("stop_tuning/tune_n*.json"), key=lambda t: t["n"]):
        out += [(f"Command: `python benchmarks/tune_stop.py --n {t['n']}` (counterfact-train, first {t['n']} records, "
                 "one batch; perplexity on the first 20,000 tokens of wikitext-2 *validation*; known kept: of the "
                 "known_1000 facts the unedited model knows, about subjects not edited, the share still known). "
                 "Steps per fact count every round; targets and verify are seconds of those phases."), "",
                stop_table(t), "", f"![stop tuning](../benchmarks/results/stop_tuning/tune_n{t['n']}.png)", "",
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
                   f"| {fmt_opt(e, 'GE')} | {kept:.1f} | {fmt_opt(e, 'perplexity', '.2f')} | {rel} "
                   f"| {steps} | {held} | {phases} |")
        out.append(f"| {r['n']} | *unedited* | {fmt_ci(u, 'ES')} | {fmt_ci(u, 'PS')} | {fmt_ci(u, 'NS')} "
                   f"| {u['Score']:.1f} | {fmt_opt(u, 'GE')} | 100 | {fmt_opt(u, 'perplexity', '.2f')} "
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
                    f"{timed[2]} is not the time of a cold edit" + cold_edit(hp) if cached
                    else f"; {timed[0]}: {timed[2]}, {'met' if timed[1] else 'missed'}") + "."), ""]
    return out


def cold_edit(hp: dict) -> str:
    """The ≤ 20-minute verdict from a cold whole edit with the same settings, timed alone
    (benchmarks/phases_by_model.py), where the scored run read its targets from the cache."""
    for t in load_results("speed/phases_by_model_n1000.json"):
        for m in t["models"]:
            # settings added since the scored run keep their old behaviour at their defaults
            same = m.get("hparams") and all(m["hparams"][k] == v for k, v in hp.items() if k in m["hparams"])
            if m["model"] == "smollm2-135m" and same:
                return (f"; the same edit cold (`python benchmarks/phases_by_model.py --n 1000 --models smollm2-135m`, "
                        f"commit {str(t['machine'].get('commit'))[:10]}, {t['machine']['threads']} threads): "
                        f"{m['wall_s'] / 60:.1f} min, {'met' if m['wall_s'] <= 1200 else 'missed'}")
    return ""


def peer_section() -> list[str]:
    """kmeng01/memit and memit on the same facts, back to back on one machine."""
    runs = sorted(load_results("peer/side_by_side_n*.json"), key=lambda r: r["n"])
    if not runs:
        return ["*Not measured yet.*", ""]
    out = []
    for r in runs:
        out += [(f"Command: `python benchmarks/peer_side_by_side.py --n {r['n']}` (the first {r['n']} records of "
                 f"`{r['records']}`, one batch; both edited models scored by the peer folder's own `cf_score.py`; "
                 "the paper's code without its statistics pass, memit's whole `memit edit` process with statistics "
                 "cached)."), "", peer_table(r), "", fmt_files([r]), ""]
    return out
