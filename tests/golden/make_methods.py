"""Writes methods.safetensors: the delta each method gives for the demo facts on a tiny seeded
model, through ``methods.run`` (margin stop, verification rounds, ridge). test_golden_methods.py
checks that every method still gives these exact tensors: a refactor of the edit pipeline must
not change one bit of what it writes. Rewrite it only for a stated change of a method's output.
Run from the repository root: .venv/bin/python tests/golden/make_methods.py
"""

import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import make_tokenizer, tiny_model
from memit.demo import demo_cases
from memit.eval.run import machine
from memit.files import save_tensors
from memit.hparams import FtConfig, MemitHyperParams
from memit.methods import METHODS, run

PREFIXES = ["Because of it. ", "I said that the day was long. "]


def golden_case():
    """Model, tokenizer, requests, hparams and C₀ of the golden edits (shared with the test)."""
    tok = make_tokenizer("bpe")
    model = tiny_model("llama", tok)
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=6, v_lr=0.5, prefixes=PREFIXES, lam=2.0, stop="margin",
                          stop_margin=0.5, rounds=2, ridge=0.5, ft=FtConfig(steps=3, lr=1e-2))
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=g, dtype=torch.float64)
    stats = {layer: a @ a.T / 64 + 0.1 * torch.eye(64, dtype=torch.float64) for layer in range(4)}
    return model, tok, [c.request for c in demo_cases()], hp, stats


def golden_deltas() -> dict[str, torch.Tensor]:
    model, tok, requests, hp, stats = golden_case()
    out = {}
    for method in METHODS:
        delta = run(method, model, tok, requests, hp, progress=False, stats=stats)
        delta.revert(model)
        out |= {f"{method}.{name}": w for name, w in delta.weights.items()}
    return out


if __name__ == "__main__":
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    tensors = golden_deltas()
    save_tensors(Path(__file__).with_name("methods.safetensors"), tensors,
                 {"commit": commit, "torch": torch.__version__, "cpu": machine()["cpu"]})
    print(len(tensors), "tensors, from commit", commit)
