"""The tables of the tuning sweeps and of the side-by-side run with the paper's code: printed by
the scripts that ran them and shown on docs/results.md, so both say the same."""

from __future__ import annotations

from memit.hparams import FLAT_NAMES, preset_for

from .load import fmt_opt, ran_on

SCORES = ("ES", "PS", "NS", "Score")


def best(results: dict, method: str) -> str | None:
    """The configuration of ``method`` with the highest Score (harmonic mean of ES, PS, NS)."""
    runs = {k: r for k, r in results["runs"].items() if r["method"] == method}
    return max(runs, key=lambda k: runs[k]["edited"]["Score"]) if runs else None


def setting(r: dict) -> float:
    return r["changes"].get("ft_norm_bound", r["changes"]["ft_lr"])


def value(r: dict, key: str) -> float:
    """A configuration's setting: what it changed, else the SmolLM2 preset's."""
    group, name = FLAT_NAMES[key]
    return getattr(getattr(preset_for("smollm2-135m").with_changes(r["changes"]), group), name)


def edge_note(results: dict) -> str:
    """Whether a chosen setting lies at the end of what was swept (then a wider sweep might beat it)."""
    edges = []
    for method, key, end, what in (("ft", "ft_norm_bound", max, "the largest bound"),
                                   ("ft-w", "ft_weight_decay", min, "the weakest decay")):
        chosen = best(results, method)
        if chosen:
            tried = [value(r, key) for r in results["runs"].values() if r["method"] == method]
            if value(results["runs"][chosen], key) == end(tried):
                edges.append(f"{method}'s is {what} tried")
    return f" At the edge of the sweep: {' and '.join(edges)}." if edges else ""


def ft_table(results: dict) -> str:
    u = results["unedited"]
    rows = ["| configuration | ES | PS | NS | Score | perplexity (valid) | ‖ΔW‖/‖W‖ | largest entry change | ran on |",
            "|---|---|---|---|---|---|---|---|---|",
            (f"| unedited | {u['ES']:.0f} | {u['PS']:.0f} | {u['NS']:.0f} | {u['Score']:.1f} | {u['perplexity']:.2f} | | | "
            f"{ran_on(results['machine'])} |")]
    chosen = {best(results, "ft"), best(results, "ft-w")}
    for name, r in results["runs"].items():
        e, li = r["edited"], r["layers_info"][0]
        mark = " (best Score)" if name in chosen else ""
        rows.append(f"| {name}{mark} | {e['ES']:.0f} | {e['PS']:.0f} | {e['NS']:.0f} | {e['Score']:.1f} | "
                    f"{e['perplexity']:.2f} | {li['delta_rel_norm']:.4f} | {li['max_abs_change']:.1e} | "
                    f"{ran_on(r.get('machine', results['machine']))} |")
    return "\n".join(rows)


def alphaedit_table(results: dict) -> str:
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


def stop_table(results: dict) -> str:
    u = results["unedited"]
    rows = [("| configuration | ES | PS | NS | Score | known kept | perplexity (valid) | max ‖ΔW‖/‖W‖ | steps/fact "
            "| stopped by margin/loss/plateau/cap | facts held (rounds) | targets s | verify s | ran on |"),
            "|" + "---|" * 14,
            (f"| unedited | {u['ES']:.0f} | {u['PS']:.0f} | {u['NS']:.0f} | {u['Score']:.1f} | | {u['perplexity']:.2f} "
            f"| | | | | | | {ran_on(results['machine'])} |")]
    for name, r in results["runs"].items():
        e, v, t = r["edited"], r.get("verification") or {}, r["timings"]
        s = r["stopped_by"]
        kept = f"{e['known_kept']:.1f}" if e.get("known_kept") is not None else ""
        rows.append(f"| {name} | {e['ES']:.0f} | {e['PS']:.0f} | {e['NS']:.0f} | {e['Score']:.1f} | {kept} "
                    f"| {e['perplexity']:.2f} | {max(x['delta_rel_norm'] for x in r['layers_info']):.3f} "
                    f"| {r['mean_steps']:.1f} | {s['margin']}/{s['loss']}/{s['plateau']}/{s['cap']} "
                    f"| {v.get('held')} ({v.get('rounds_used')}) | {t['targets']:.0f} | {t.get('verify', 0):.0f} "
                    f"| {ran_on(r['machine'])} |")
    return "\n".join(rows)


def peer_table(r: dict) -> str:
    def row(name: str, s: dict, e: dict, extra: str = "") -> str:
        return f"| {name} | {s:.0f} | " + " | ".join(fmt_opt(e, k) for k in SCORES) + f" | {extra} |"

    lines = [f"| {r['n']} facts | edit s | " + " | ".join(SCORES) + " | |", "|" + "---|" * (len(SCORES) + 3),
             "| unedited | | " + " | ".join(fmt_opt(r['peer']['unedited'], k) for k in SCORES) + " | |",
             row("paper's code (excl. statistics)", r["peer"]["edit_s"], r["peer"]["edited"])]
    for preset, m in r["memit"].items():
        lines.append(row(f"memit --preset {preset} (whole process)", m["edit_s"], m["edited"],
                         f"×{m['speedup']:.1f}; {m['held']} held, {m['rounds_used']} round(s)"))
    return "\n".join(lines)
