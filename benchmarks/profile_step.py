"""Where one target-vector optimisation step goes, and how far it is from a FLOP lower bound.

One step on a chunk of prompts (N requests from counterfact-train; SmolLM2, or ``--model
gemma3-270m``): forward of the suffix through the blocks above the edited layer (the prefix cache
and the edited block's output are computed once per chunk), loss at the target positions,
backward to δ. The LM head's share (logits at the loss positions, their log-softmax and its
backward) is timed on its own, since Gemma's vocabulary is 5.3 times SmolLM2's.
The FLOPs are counted from the shapes (matrix products only: 2·m·n·k each; the backward needs
input gradients alone, for the blocks above the edited layer and the LM head), and divided by the
float32 matrix-product throughput measured on this machine.

    python benchmarks/profile_step.py --n 10 [--model gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import memit
from memit.chunk import Chunk
from memit.eval.run import machine
from memit.hparams import default_hparams
from memit.models.arch import get_arch, logits, n_layers
from memit.prompts import request_rows

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
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=None, help="default benchmarks/results/speed/profile[_MODEL].json")
    args = ap.parse_args()
    out = args.out or f"benchmarks/results/speed/profile{'' if args.model == 'smollm2-135m' else '_' + args.model}.json"
    model, tok = memit.load_model(args.model)
    arch = get_arch(model)
    pre = arch.post_mlp_norm is not None
    hp = default_hparams(model.config.model_type, n_layers(model, arch))  # the model's own preset
    layer = hp.layers[-1]
    reqs = [c.request for c in memit.load_cases(DATA, n=args.n)]
    rows = request_rows(tok, reqs, hp.prefixes)
    per_req = len(rows[0])
    flat = [e for r in rows for e in r]
    with torch.no_grad():
        chunk = Chunk(model, arch, layer, flat, per_req, tok.pad_token_id, pre_norm=pre)
    cfg = model.config
    d = cfg.hidden_size
    delta = torch.zeros(len(reqs), d, requires_grad=True)
    live = list(range(len(reqs)))

    def add(out, rr, y):  # δ on the block output, or on the MLP output before the norm (Gemma)
        return out + (chunk.norm(y + delta[rr]) - chunk.norm(y) if pre else delta[rr])

    def step():
        nll, kl, _ = chunk.forward(model, arch, live, add)
        (nll.sum() + kl.logsumexp(-1).sum() * 0).backward()

    loss_positions = sum(len(tgt) for _, _, tgt in chunk.loss) + len(reqs)  # target predictions, one per KL row
    hidden = torch.randn(loss_positions, d, requires_grad=True)

    def head():
        lp = torch.log_softmax(logits(model, arch, hidden).float(), -1)
        lp[:, 0].sum().backward()

    step()  # warm-up
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        step()
    wall = (time.perf_counter() - t) / reps
    head()
    t = time.perf_counter()
    for _ in range(reps):
        head()
    head_wall = (time.perf_counter() - t) / reps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())

    # FLOPs of the matrix products, from the shapes of each pass (the KL rows may run apart).
    rows_n = sum(part.ids.shape[0] for part in chunk.parts)
    width = max(part.ids.shape[1] for part in chunk.parts)
    real_tokens = sum(int(part.mask[:, part.p:].sum()) for part in chunk.parts)
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    per_block = d * q * 2 + d * kv * 2 + 3 * d * cfg.intermediate_size  # q,o + k,v + gate,up,down
    blocks = cfg.num_hidden_layers
    above = blocks - layer - 1
    padded = sum(part.ids.numel() for part in chunk.parts)
    vocab = model.get_output_embeddings().weight.shape[0]
    fwd = 2 * padded * per_block * above + 2 * loss_positions * vocab * d  # blocks ≤ layer: cached
    bwd = 2 * padded * per_block * above + 2 * loss_positions * vocab * d
    attn = sum(4 * part.ids.numel() * part.mask.shape[1] * q * 2 * above for part in chunk.parts)
    flops = fwd + bwd + attn
    peak = matmul_gflops()
    res = {
        "model": args.model, "vocab": vocab, "blocks_above": above, "n_requests": len(reqs), "rows": rows_n, "suffix_width": width, "suffix_tokens_padded": padded,
        "suffix_tokens_real": real_tokens, "prefix_tokens_cached": max(part.p for part in chunk.parts), "loss_positions": loss_positions,
        "step_wall_s": wall, "lm_head_s": head_wall, "lm_head_share": head_wall / wall, "gflop_per_step": flops / 1e9, "matmul_peak_gflops": peak,
        "lower_bound_s": flops / 1e9 / peak, "achieved_gflops": flops / 1e9 / wall,
        "top_ops": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6,
                     "share": e.self_cpu_time_total / total_us} for e in ops],
        "machine": machine(),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1))
    print(f"one step on {len(reqs)} requests ({rows_n} rows × {width} suffix columns, {real_tokens} real tokens): "
          f"{wall:.2f} s; {flops / 1e9:.1f} GFLOP → {flops / 1e9 / wall:.0f} GFLOP/s achieved, "
          f"matmul peak {peak:.0f} GFLOP/s, lower bound {flops / 1e9 / peak:.2f} s ({wall / (flops / 1e9 / peak):.1f}× above); "
          f"LM head ({vocab:,} tokens × {loss_positions} positions) {head_wall:.2f} s, {100 * head_wall / wall:.0f} % of the step")
    for e in res["top_ops"]:
        print(f"  {e['op']:45} {e['self_s']:.3f} s  {100 * e['share']:.0f} %")


if __name__ == "__main__":
    main()
