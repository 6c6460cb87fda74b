"""Target-vector speed on a GPU: the fast path against the plain reference loop, on a model with
SmolLM2-135M's architecture and tokenizer (random weights where the real ones cannot travel, so
only the times mean anything, not the quality).

    python benchmarks/gpu_speed.py --model-dir DIR --requests cf.json --n 10 --out gpu_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import memit
from memit.eval.run import machine
from memit.hparams import preset_for
from memit.models.arch import get_arch
from memit.targets import compute_targets

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test oracle
from targets_reference import reference_targets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True, help="folder with config.json and the tokenizer")
    ap.add_argument("--requests", required=True)
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--out", default="gpu_speed.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_config(cfg).to("cuda").eval().requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    arch, hp = get_arch(model), preset_for("smollm2-135m")
    rows = []
    for n in args.n:
        reqs = [c.request for c in memit.load_cases(args.requests, n=n)]
        for name, fn in (("fast", lambda r: compute_targets(model, tok, arch, r, 8, hp.prefixes, hp, progress=False)),
                         ("reference", lambda r: reference_targets(model, tok, arch, r, 8, hp.prefixes, hp))):
            fn(reqs[:2])  # warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn(reqs)
            torch.cuda.synchronize()
            dt = time.perf_counter() - t
            rows.append({"n": n, "path": name, "seconds": dt, "steps": sum(out.steps)})
            print(f"N={n:4d} {name:9} {dt:7.2f} s  ({sum(out.steps)} request-steps)", flush=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows,
                                          "note": "random weights with SmolLM2-135M's architecture and tokenizer"},
                                         indent=1))


if __name__ == "__main__":
    main()
