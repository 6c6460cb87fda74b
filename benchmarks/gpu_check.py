"""Device check: the same edit on CPU and on CUDA gives the same delta, for every architecture
in float32, and a bf16 edit on CUDA stays close; prints one line per case and a JSON summary.

    python benchmarks/gpu_check.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import memit
from helpers import ALL_TYPES, CORPUS, make_tokenizer, tiny_model
from memit.eval.run import machine
from memit.hparams import MemitHyperParams

REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args()
    corpus = Path("/tmp/memit_gpu_corpus.txt")
    corpus.write_text("\n".join(CORPUS * 3))
    tok = make_tokenizer("bpe")
    hp = MemitHyperParams(layers=[1, 2], lam=0.5, prefixes=["I said. "], stats_corpus=str(corpus),
                          stats_tokens=3000, stats_seq_len=32, v_num_grad_steps=6)
    rows = []
    for mt in ALL_TYPES:
        for dtype in (torch.float32, torch.bfloat16):
            cpu = memit.edit(tiny_model(mt, tok), tok, REQS, hp, apply=False, progress=False)
            model = tiny_model(mt, tok, dtype=dtype).to("cuda")
            t = time.perf_counter()
            gpu = memit.edit(model, tok, REQS, hp, apply=False, progress=False)
            dt = time.perf_counter() - t
            rel = max(float((gpu.weights[k] - cpu.weights[k]).norm() / cpu.weights[k].norm()) for k in cpu.weights)
            ok = rel < (1e-3 if dtype == torch.float32 else 0.1)
            rows.append({"model_type": mt, "dtype": str(dtype), "max_rel_diff_vs_cpu_fp32": rel, "ok": ok,
                         "edit_s": dt})
            print(f"{mt:12} {dtype!s:15} rel diff vs CPU {rel:.2e} {'OK' if ok else 'FAIL'} ({dt:.1f} s)", flush=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    print("all ok" if all(r["ok"] for r in rows) else "SOME FAILED")


if __name__ == "__main__":
    main()
