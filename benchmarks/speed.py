"""Speed of an edit on SmolLM2, phase by phase, against the plain per-request reference loop.

For each N: the statistics pass (fresh, one pass for all layers, tokens/s), target vectors by
the fast path and by the reference loop (the paper code's structure: one request at a time, full
forward over every position and layer each step, full-vocabulary logits) on the same requests,
then keys and solve from each; ES/PS/NS of both edits; peak RSS. One JSON per N, written when
that N is done (a rerun skips it), and a PNG of time against N.

    python benchmarks/speed.py                 # N = 10, 100
    python benchmarks/speed.py --n 10 100 1000 # add 1000 (long; the reference loop is skipped there)
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import memit
from memit.corpus import token_windows
from memit.eval.metrics import counterfact_case_scores, counterfact_summary
from memit.eval.run import machine
from memit.hparams import preset_for
from memit.models.arch import get_arch
from memit.stats import accumulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracle
from targets_reference import reference_targets

DATA = Path(__file__).resolve().parents[2] / "shared/data/counterfact/easyedit/counterfact-train.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--stats-tokens", type=int, default=20_000, help="fresh statistics pass measured per N")
    ap.add_argument("--out", default="benchmarks/results/speed")
    ap.add_argument("--reference-max", type=int, default=100,
                    help="run the reference loop only up to this N (it takes ~25 s per request here)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = memit.load_model("smollm2-135m")
    arch = get_arch(model)
    hp = preset_for("smollm2-135m")
    for n in args.n:
        file = out / f"speed_n{n}.json"
        if file.exists():
            print(f"{file} exists: skipped")
            continue
        cases = memit.load_cases(args.data, n=n)
        reqs = [c.request for c in cases]
        res = {"n": n, "machine": machine(), "hparams": hp.to_dict()}

        windows = token_windows(tok, hp.stats_corpus, hp.stats_seq_len, args.stats_tokens)
        t = time.perf_counter()
        _, _, drift = accumulate(model, arch, hp.layers, windows, hp.batch_tokens)
        dt = time.perf_counter() - t
        res["stats"] = {"tokens": windows.numel(), "seconds": dt, "tokens_per_s": windows.numel() / dt,
                        "layers": len(hp.layers), "passes": 1,
                        "tokens_through_model": windows.numel(),
                        "tokens_one_pass_per_layer": windows.numel() * len(hp.layers),
                        "drift_last_quarter": {layer: d[-1][2] for layer, d in drift.items() if d}}

        t = time.perf_counter()
        fast = memit.edit(model, tok, reqs, hp)
        res["fast"] = {"wall_s": time.perf_counter() - t, "phases": fast.meta["timings"]}
        res["fast"]["quality"] = counterfact_summary(counterfact_case_scores(model, tok, cases))
        fast.revert(model)

        res["edits_per_s_fast"] = n / sum(v for k, v in fast.meta["timings"].items() if k != "stats")
        res["peak_rss_mb"] = peak_rss_mb()
        if n > args.reference_max:
            file.write_text(json.dumps(res, indent=1))
            q = res["fast"]["quality"]
            print(f"N={n}: targets {fast.meta['timings']['targets']:.1f} s, edit {res['fast']['wall_s']:.1f} s; "
                  f"ES/PS/NS {q['ES']:.0f}/{q['PS']:.0f}/{q['NS']:.0f}; reference loop not run (N > --reference-max)")
            continue

        t = time.perf_counter()
        ref_targets = reference_targets(model, tok, arch, reqs, hp.layers[-1], hp.prefixes, hp)
        ref_t = time.perf_counter() - t
        ref = memit.edit(model, tok, reqs, hp, targets=ref_targets)
        res["reference"] = {"targets_s": ref_t, "phases": ref.meta["timings"] | {"targets": ref_t}}
        res["reference"]["quality"] = counterfact_summary(counterfact_case_scores(model, tok, cases))
        ref.revert(model)

        res["speedup_targets"] = ref_t / fast.meta["timings"]["targets"]
        res["peak_rss_mb"] = peak_rss_mb()
        file.write_text(json.dumps(res, indent=1))
        q1, q2 = res["fast"]["quality"], res["reference"]["quality"]
        print(f"N={n}: targets fast {fast.meta['timings']['targets']:.1f} s vs reference {ref_t:.1f} s "
              f"(×{res['speedup_targets']:.1f}); ES/PS/NS fast {q1['ES']:.0f}/{q1['PS']:.0f}/{q1['NS']:.0f} "
              f"reference {q2['ES']:.0f}/{q2['PS']:.0f}/{q2['NS']:.0f}; peak RSS {res['peak_rss_mb']:.0f} MB")
    plot(out)


def plot(out: Path) -> None:
    from memit.eval.plots import pyplot, save

    plt = pyplot()

    runs = sorted((json.loads(f.read_text()) for f in out.glob("speed_n*.json")), key=lambda r: r["n"])
    if not runs:
        return
    ns = [r["n"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    for phase in ("targets", "keys", "solve"):
        ax.plot(ns, [r["fast"]["phases"][phase] for r in runs], "o-", label=f"memit: {phase}")
    with_ref = [r for r in runs if r.get("reference")]
    ax.plot([r["n"] for r in with_ref], [r["reference"]["targets_s"] for r in with_ref], "s--",
            label="reference loop: targets")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("facts edited (N)")
    ax.set_ylabel("seconds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("SmolLM2-135M edit time by phase (statistics cached)")
    save(fig, out / "speed.png")


if __name__ == "__main__":
    main()
