"""How far sequential editing moves the edited layers on ordinary text, batch after batch.

For each sequential run's journal (``benchmarks/results/sequential/*.journal``, kept on the machine
that ran it: the deltas are 21 MB a step and are not committed), the sum of the first k steps'
ΔW per layer is measured against the unedited model: tr(ΣΔW C₀ ΣΔWᵀ) / tr(W C₀ Wᵀ), with C₀ the
unedited model's statistics. MEMIT's λ term prices exactly this; AlphaEdit's projection is meant
to keep it near zero. Also, every ``--every`` steps and at the last, how far the statistics a next
batch would use (C₀ of the edited model, ``--sequential-stats current``) have moved from the
unedited model's, and the size of the null space AlphaEdit's threshold finds in each. Writes
``text_change.json`` and a PNG beside the results.

    python benchmarks/seq_drift.py --dir benchmarks/results/sequential [--out DIR] [--every 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import memit
from memit import weights
from memit.delta import load_delta
from memit.diagnostics import text_change
from memit.eval.plots import pyplot, save
from memit.eval.results import sequence_label
from memit.eval.run import machine
from memit.eval.sequential import journaled_runs
from memit.hparams import MemitHyperParams, preset_for
from memit.journal import Journal
from memit.models.arch import as_math, get_arch
from memit.stats import stats_for


def drift(journal: Journal, model, arch, c0: dict, steps: int) -> list[dict]:
    """Per step k ≤ ``steps``: the text change of each edited layer after steps 1..k, and their mean."""
    layer_of = {arch.mlp_out_name(layer) + ".weight": layer for layer in c0}
    total: dict[str, object] = {}
    out = []
    for k in range(1, min(steps, len(journal.steps)) + 1):
        d = load_delta(journal.dir / journal.steps[k - 1]["delta"])  # the name the journal recorded
        for name, dw in d.weights.items():
            total[name] = total[name] + dw.double() if name in total else dw.double()
        per_layer = {layer_of[name]: text_change(as_math(dw, arch), as_math(weights.read(model, name), arch),
                                                 c0[layer_of[name]]) for name, dw in total.items()}
        out.append({"step": k, "edits": sum(s.get("n_requests", 0) for s in journal.steps[:k]),
                    "per_layer": per_layer, "mean": sum(per_layer.values()) / len(per_layer)})
    return out


def stats_drift(journal: Journal, model, tok, hp: MemitHyperParams, c0: dict, steps: int, every: int) -> list[dict]:
    """Per chosen step k: ‖C₀(k) − C₀(0)‖/‖C₀(0)‖ per layer (Frobenius), C₀(k) of the model after
    steps 1..k (from the cache when the run computed it), and the number of eigenvalues below
    ``hp.alphaedit.null_threshold`` in each (AlphaEdit's null space). The model is restored exactly."""
    wanted = set(range(every, steps + 1, every)) | ({steps} if steps else set())
    out = []
    for k in journal.walk(model, steps):
        if k not in wanted:
            continue
        c = stats_for(model, tok, hp, progress=False)
        out.append({"step": k, "edits": sum(s.get("n_requests", 0) for s in journal.steps[:k]),
                    "rel_change": {layer: float((c[layer] - c0[layer]).norm() / c0[layer].norm()) for layer in c0},
                    "null_dim": {layer: int((torch.linalg.eigvalsh(c[layer]) < hp.alphaedit.null_threshold).sum())
                                 for layer in c0}})
    return out


def plot(result: dict, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, points in result["runs"].items():
        ax.plot([p["edits"] for p in points], [p["mean"] for p in points], "o-", label=method, ms=3)
    ax.set_xlabel("edits so far")
    ax.set_ylabel("text change of the edited layers (mean)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("tr(ΣΔW C₀ ΣΔWᵀ) / tr(W C₀ Wᵀ), C₀ and W of the unedited model", fontsize=9)
    return save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", nargs="+", default=["benchmarks/results/sequential"],
                    help="where the runs and their journals are (several: runs made in different checkouts)")
    ap.add_argument("--out", help="where to write text_change.json/.png (default: the first --dir)")
    ap.add_argument("--every", type=int, default=5, help="measure the statistics' drift every this many steps")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto: where the rebuilt models run")
    args = ap.parse_args()
    out = Path(args.out or args.dir[0])
    model, tok = memit.load_model("smollm2-135m", device=args.device)
    arch = get_arch(model)
    hp = preset_for("smollm2-135m")
    c0 = stats_for(model, tok, hp)
    result = {"machine": machine(), "runs": {}, "statistics": {},
              "null_dim_unedited": {layer: int((torch.linalg.eigvalsh(c) < hp.alphaedit.null_threshold).sum())
                                    for layer, c in c0.items()}}
    for journal, run, scored in journaled_runs(args.dir):
        name = sequence_label(run)
        result["runs"][name] = drift(journal, model, arch, c0, scored)
        result["statistics"][name] = stats_drift(journal, model, tok, MemitHyperParams.from_dict(run["hparams"]),
                                                 c0, scored, args.every)
        last = result["runs"][name][-1]
        print(f"{name}: {last['edits']} edits, mean text change {last['mean']:.4f}", flush=True)
    (out / "text_change.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "text_change.png")


if __name__ == "__main__":
    main()
