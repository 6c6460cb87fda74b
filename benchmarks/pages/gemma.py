"""The block of docs/results.md on the second real model, Gemma 3 270M."""

from __future__ import annotations

import json
from pathlib import Path

from .load import fmt_ci, fmt_files, fmt_machine, fmt_opt, load_results


def gemma_section() -> list[str]:
    """Gemma 3 270M: counterfact-edit at N = 100 with the settings chosen on train and with the
    SmolLM2 preset as it is, the train sweep that chose them, its causal trace, and where a
    target-vector step goes beside SmolLM2's."""
    runs = sorted(load_results("gemma/*/counterfact_memit_n*.json"), key=lambda r: (r["n"], r["_file"]))
    out = []
    if not runs:
        out += ["*Not measured yet.*", ""]
    else:
        out += [("Command: `memit eval --model gemma3-270m SETTINGS --dataset counterfact --data "
                 "../shared/data/counterfact/easyedit/counterfact-edit.json --n N --method memit --perplexity "
                 "../shared/data/wikitext-2-raw/wiki.test.raw --retention ../shared/data/known_1000.json "
                 "--out benchmarks/results/gemma/FOLDER`, SETTINGS none (`tuned`: the `gemma3-270m` preset), "
                 "`--preset smollm2-135m` (`transferred`), or `--hparams` with the band, λ per d_ff and step of "
                 "the table. Generated: plain answers (see above)."), "",
                ("| folder | band | λ per d_ff | step (post-norm) | N | | ES | PS | NS | Score | GE | gen ES | gen PS "
                 "| gen NS | known facts kept | perplexity | facts held |"),
                "|---" * 17 + "|"]
        for r in runs:
            hp = r["hparams"]
            v = r.get("verification") or {}
            for state in ("unedited", "edited"):
                e = r[state]
                g = e.get("generated") or {}
                gen = [f"{g[k]:.1f}" if g.get(k) is not None else "–" for k in ("gen_ES", "gen_PS", "gen_NS")]
                edited = state == "edited"
                kept = fmt_ci(r["retention"], "kept") if edited and r.get("retention") else "–"
                held = f"{v['held']} of {v['held'] + v['failed']} ({v['rounds_used']} rounds)" if edited and v else ""
                setting = (f"{hp['layers'][0]}–{hp['layers'][-1]} | {hp['lam_per_dff']:g} | {hp['v_lr_post_norm']:g}"
                           if edited else " |  | ")
                out.append(f"| {Path(r['_file']).parent.name} | {setting} | {r['n']} | {state} | "
                           + " | ".join(fmt_ci(e, k) for k in ("ES", "PS", "NS")) + f" | {e['Score']:.1f} | "
                           + f"{fmt_opt(e, 'GE', '.1f')} | " + " | ".join(gen) + f" | {kept} | {fmt_opt(e, 'perplexity', '.2f')} | {held} |")
        out += ["", fmt_files(runs), ""]
    for t in sorted(load_results("gemma_tuning/tune_gemma3-270m_n*.json"), key=lambda t: t["n"]):
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
    for ph in load_results("speed/phases_by_model_n*.json"):
        out += [(f"Time per phase of one whole edit, each model with its own preset, on the same {ph['n']} "
                 "counterfact-edit requests (statistics cached, target vectors computed afresh, every "
                 f"verification round; `python benchmarks/phases_by_model.py --n {ph['n']}`):"), "",
                "| model | band | steps/fact | targets | keys | solve | diagnostics | verify | rest | whole edit | held |",
                "|---" * 11 + "|"]
        for m in ph["models"]:
            t = m["phases_s"]
            rest = m["wall_s"] - sum(t.values())
            v = m["verification"]
            out.append(f"| {m['model']} | {m['layers'][0]}–{m['layers'][-1]} | {m['steps_per_fact']:.1f} | "
                       + " | ".join(f"{t.get(k, 0.0):.1f} s" for k in ("targets", "keys", "solve", "diagnostics",
                                                                        "verify"))
                       + f" | {rest:.1f} s | {m['wall_s']:.1f} s | {v['held']} of {v['held'] + v['failed']} "
                       f"({len(m['rounds'])} rounds) |")
        out += ["", f"File: `{ph['_file']}`. Machine: {fmt_machine(ph['machine'])}.", ""]
    pairs = load_results("speed/chunk/phases_n*.json")
    if pairs:
        out += [("The same whole SmolLM2 edit at successive commits, back to back on one machine, from a checkout of "
                 "each (`python benchmarks/phases_by_model.py --n N --models smollm2-135m`). 4fe8997: before; "
                 "706972c: the target loop's rows cut after the last column their loss reads, KL rows in a pass of "
                 "their own when that saves many columns (`src/memit/chunk.py`); b931749: verification runs each "
                 "context prefix once, as a cache (`src/memit/verify.py`). Only float summation order differs:"), "",
                "| N | commit | steps/fact | targets | keys | verify | whole edit | held |", "|---" * 8 + "|"]
        for ph in sorted(pairs, key=lambda r: (r["n"], r["_file"])):
            m, t = ph["models"][0], ph["models"][0]["phases_s"]
            v = m["verification"]
            out.append(f"| {ph['n']} | {str(ph['machine'].get('commit'))[:7]} | {m['steps_per_fact']:.1f} | "
                       + " | ".join(f"{t.get(k, 0.0):.1f} s" for k in ("targets", "keys", "verify"))
                       + f" | {m['wall_s']:.1f} s | {v['held']} of {v['held'] + v['failed']} |")
        out += ["", fmt_files(pairs), ""]
    return out
