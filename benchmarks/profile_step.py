"""Where one target-vector optimisation step goes, and how far it is from a FLOP lower bound.

One step on a chunk of SmolLM2 prompts (N requests from counterfact-train): forward of the
suffix through the blocks above the edited layer (the prefix cache and the edited block's output
are computed once per chunk), loss at the target positions, backward to δ.
The FLOPs are counted from the shapes (matrix products only: 2·m·n·k each; the backward needs
input gradients alone, for the blocks above the edited layer and the LM head), and divided by the
float32 matrix-product throughput measured on this machine.

    python benchmarks/profile_step.py --n 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import memit
from memit.eval.run import machine
from memit.hparams import preset_for
from memit.models.arch import get_arch
from memit.prompts import request_rows
from memit.targets import _Chunk

DATA = Path(__file__).resolve().parents[2] / "shared/data/counterfact/easyedit/counterfact-train.json"


def matmul_gflops(size: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size ** 3 * reps / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/speed/profile.json")
    args = ap.parse_args()
    model, tok = memit.load_model("smollm2-135m")
    arch = get_arch(model)
    hp = preset_for("smollm2-135m")
    layer = hp.layers[-1]
    reqs = [c.request for c in memit.load_cases(DATA, n=args.n)]
    rows = request_rows(tok, reqs, hp.prefixes)
    per_req = len(rows[0])
    flat = [e for r in rows for e in r]
    with torch.no_grad():
        chunk = _Chunk(model, arch, layer, flat, per_req, tok.pad_token_id)
    d = model.config.hidden_size
    delta = torch.zeros(len(reqs), d, requires_grad=True)
    live = list(range(len(reqs)))

    def step():
        nll, kl = chunk.forward(model, arch, live, lambda out, rr: out + delta[rr])
        (nll.sum() + kl.logsumexp(-1).sum() * 0).backward()

    step()  # warm-up
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        step()
    wall = (time.perf_counter() - t) / reps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())

    # FLOPs of the matrix products, from the shapes.
    rows_n, width = chunk.ids.shape
    real_tokens = int(chunk.mask[:, chunk.p:].sum())
    cfg = model.config
    kv = cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
    per_block = d * d * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size  # q,o + k,v + gate,up,down
    blocks = cfg.num_hidden_layers
    above = blocks - layer - 1
    padded = rows_n * width
    loss_positions = len(chunk.tgt) + len(reqs)
    vocab = model.get_output_embeddings().weight.shape[0]
    fwd = 2 * padded * per_block * above + 2 * loss_positions * vocab * d  # blocks ≤ layer: cached
    bwd = 2 * padded * per_block * above + 2 * loss_positions * vocab * d
    attn = 4 * padded * (chunk.mask.shape[1]) * d * 2 * above
    flops = fwd + bwd + attn
    peak = matmul_gflops()
    res = {
        "n_requests": len(reqs), "rows": rows_n, "suffix_width": width, "suffix_tokens_padded": padded,
        "suffix_tokens_real": real_tokens, "prefix_tokens_cached": chunk.p, "loss_positions": loss_positions,
        "step_wall_s": wall, "gflop_per_step": flops / 1e9, "matmul_peak_gflops": peak,
        "lower_bound_s": flops / 1e9 / peak, "achieved_gflops": flops / 1e9 / wall,
        "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6,
                     "share": e.self_cpu_time_total / total_us} for e in ops],
        "machine": machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"one step on {len(reqs)} requests ({rows_n} rows × {width} suffix columns, {real_tokens} real tokens): "
          f"{wall:.2f} s; {flops / 1e9:.1f} GFLOP → {flops / 1e9 / wall:.0f} GFLOP/s achieved, "
          f"matmul peak {peak:.0f} GFLOP/s, lower bound {flops / 1e9 / peak:.2f} s ({wall / (flops / 1e9 / peak):.1f}× above)")
    for e in res["top_ops"]:
        print(f"  {e['op']:45} {e['self_s']:.3f} s  {100 * e['share']:.0f} %")


if __name__ == "__main__":
    main()
