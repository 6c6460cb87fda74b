"""Blocks of docs/results.md on speed: phases, one optimisation step, and the GPU runs."""

from __future__ import annotations

from .load import fmt_host, fmt_machine, load_one, load_results


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
                       f"= {big[0]['edit_wall_s'] / 60:.0f} min; target vectors "
                       f"{t['targets']:.0f} s, keys {t['keys']:.0f} s, solve {t['solve']:.1f} s.")]
    return lines + ["", "![speed](../benchmarks/results/speed/speed.png)", ""]


def edit_phases_section() -> list[str]:
    """The same edit timed on two commits: what a change to one phase bought."""
    runs = sorted(load_results("speed/edit_phases_n*.json"), key=lambda r: r["_file"])
    if not runs:
        return ["*Not measured yet.*", ""]
    lines = [(f"Command: `python benchmarks/edit_phases.py --n {runs[0]['n']} --repeat {len(runs[0]['timings_s'])}`, "
              "with `PYTHONPATH` at each commit's `src` (counterfact-edit, first records; target vectors and "
              "statistics from the cache, so keys, solve and diagnostics are what is timed; the background runs "
              "were paused)."), "",
             "| commit | keys (each run) | solve | diagnostics | file |", "|---|---|---|---|---|"]
    for r in runs:
        t = r["timings_s"]
        lines.append(f"| {(r['machine']['commit'] or '?')[:7]} | " + " / ".join(f"{x['keys']:.1f} s" for x in t)
                     + f" | {t[-1]['solve']:.1f} s | {t[-1]['diagnostics']:.1f} s | `{r['_file']}` |")
    return lines + ["", f"Machine: {fmt_host(runs[0]['machine'])}.", ""]


def profile_section() -> list[str]:
    p = load_one("speed/profile.json")
    if p is None:
        return ["*Not measured yet.*", ""]
    return [(f"Command: `python benchmarks/profile_step.py --n {p['n_requests']}`: one step on {p['rows']} prompt rows "
             f"({p['suffix_tokens_real']} real suffix tokens after a {p['prefix_tokens_cached']}-token cached prefix) "
             f"takes {p['step_wall_s']:.2f} s for {p['gflop_per_step']:.0f} GFLOP of matrix products "
             f"({p['achieved_gflops']:.0f} GFLOP/s); a plain 2048² float32 product reached "
             f"{p['matmul_peak_gflops']:.0f} GFLOP/s in the same run: the step runs at "
             f"{100 * p['achieved_gflops'] / p['matmul_peak_gflops']:.0f} % of that speed, "
             f"{p['step_wall_s'] / p['lower_bound_s']:.1f}× the FLOP lower bound. "
             + ", ".join(f"{o['op']} {100 * o['share']:.0f} %" for o in p["top_ops"][:3]) + "."), ""]


def gpu_speed_section() -> list[str]:
    g = load_one("device/gpu_speed_h100.json")
    if g is None:
        return ["*Not measured yet.*", ""]
    out = [("Command: `python benchmarks/gpu_speed.py --model-dir DIR --requests cf100.json --n 10 100` "
            f"({g['note']}: only the times mean anything)."), "",
           "| N | memit (fast path) | reference loop | speed-up |", "|---|---|---|---|"]
    for n in sorted({r["n"] for r in g["rows"]}):
        f = next(r for r in g["rows"] if r["n"] == n and r["path"] == "fast")
        ref = next(r for r in g["rows"] if r["n"] == n and r["path"] == "reference")
        out.append(f"| {n} | {f['seconds']:.1f} s | {ref['seconds']:.1f} s | ×{ref['seconds'] / f['seconds']:.1f} |")
    return out + ["", f"File: `{g['_file']}`. Machine: {fmt_machine(g['machine'])}.", ""]


def gpu_check_section() -> list[str]:
    c = load_one("device/gpu_check_h100.json")
    if c is None:
        return ["*Not measured yet.*", ""]
    fp32 = [r for r in c["rows"] if r["dtype"] == "torch.float32"]
    bf16 = [r["max_rel_diff_vs_cpu_fp32"] for r in c["rows"] if r["dtype"] == "torch.bfloat16"]
    return [("Command: `python benchmarks/gpu_check.py` on an H100: the delta of a CUDA edit against the CPU edit "
             f"in float32, for all {len(fp32)} architectures: largest relative difference "
             f"{max(r['max_rel_diff_vs_cpu_fp32'] for r in fp32):.1e}. In bf16 the CUDA edits of these tiny random "
             f"models differ from the float32 CPU edit by {100 * min(bf16):.0f}–{100 * max(bf16):.0f} %."), "", f"File: `{c['_file']}`.", ""]
