"""The block of docs/results.md on shipping an edit: delta sizes, LoRA adapters, GGUF, llama.cpp."""

from __future__ import annotations

from .load import fmt_files, load_results


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
