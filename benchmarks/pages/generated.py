"""The block of docs/results.md on generated answers, chat prompts and multi-hop questions."""

from __future__ import annotations

from .load import fmt_ci, fmt_files, load_results


def generated_section() -> list[str]:
    """Generated answers beside the teacher-forced scores, and what MQuAKE's multi-hop questions show."""
    runs = [r for r in load_results("generated/counterfact_*_n*.json") + load_results("generated/tuned/counterfact_*_n*.json")
            + load_results("stop/*/counterfact_memit_n*.json") if "generated" in r["edited"]]
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
                 "`src/memit/eval/generated.py`. Folder `generated/tuned`: FT-L with the bound tuned on train "
                 "(`--method ft --hparams benchmarks/hparams/smollm2-135m_ft-l.json`)."), "",
                "| N | method | folder | | ES | PS | NS | gen ES | gen PS | gen NS | chat ES | chat PS | chat NS |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def label(r):
            hp = r.get("hparams") or {}
            if r["method"].startswith("ft"):  # fine-tuning: no target vectors, no solve; its bound tells the runs apart
                return r["method"] + (f", ε {hp['ft']['norm_bound']:g}" if hp.get("ft") else "")
            stop = ", paper's stop" if hp.get("stop") == "paper" else ""
            return r["method"] + stop + (f", ridge {hp['ridge']:g}" if hp.get("ridge") else "")

        def folder(r):  # the same method and N measured twice (two commits) would read as one row twice
            return r["_file"].removeprefix("benchmarks/results/").rsplit("/", 1)[0]
        gaps = []
        for r in runs:
            for state, e in (("unedited", r["unedited"]), ("edited", r["edited"])):
                g = e["generated"]
                cells = [fmt_ci(e, k) for k in ("ES", "PS", "NS")]
                cells += [f"{g[k]:.1f}" if g.get(k) is not None else "–"
                          for k in ("gen_ES", "gen_PS", "gen_NS", "chat_ES", "chat_PS", "chat_NS")]
                out.append(f"| {r['n']} | {label(r)} | {folder(r)} | {state} | " + " | ".join(cells) + " |")
            g = r["edited"]["generated"]
            gaps.append((r, r["edited"]["ES"] - g["gen_ES"], r["edited"]["PS"] - g["gen_PS"]))
        seeded = [r for r in runs if r.get("unedited_source")]
        if seeded:
            out += ["", "Unedited rows not scored again but read from an earlier result on the same records, model and "
                    "scoring code (`python benchmarks/seed_baseline.py FILE`): " + "; ".join(
                        f"{folder(r)} at N = {r['n']} from `{r['unedited_source']['file']}` "
                        f"({r['unedited_source']['commit'][:10]})" for r in seeded) + "."]
        out += ["", "How far the generated figures sit from the teacher-forced ones, edited: "
                + "; ".join(f"{label(r)} ({folder(r)}) at N = {r['n']}: ES {es:+.1f} and PS {ps:+.1f} points"
                            for r, es, ps in gaps) + " (teacher forced minus generated, plain).", "",
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
