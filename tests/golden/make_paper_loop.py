"""Writes paper_loop.safetensors: the target vectors and the edit of a tiny seeded model made
by the paper's stopping rule (loss below v_loss_threshold, or the step cap), at commit 3e2a619,
before per-fact stopping existed. test_stopping.py checks that ``stop="paper"`` still gives them.
Run from the repository root: .venv/bin/python tests/golden/make_paper_loop.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import memit
from helpers import make_tokenizer, tiny_model
from memit.files import save_tensors
from memit.hparams import MemitHyperParams
from memit.models.arch import get_arch
from memit.targets import compute_targets

REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano"),
        memit.EditRequest("{} speaks", "Danielle", "French and English")]
PREFIXES = ["Because of it. ", "I said that the day was long. "]


def golden_case():
    """Model, tokenizer, hparams and C₀ of the golden edit (shared with the test)."""
    tok = make_tokenizer("bpe")
    model = tiny_model("llama", tok)
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=8, v_lr=0.5, clamp_norm_factor=0.05, v_loss_threshold=5.75,
                          prefixes=PREFIXES,
                          lam=2.0)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=g, dtype=torch.float64)
    stats = {layer: a @ a.T / 64 + 0.1 * torch.eye(64, dtype=torch.float64) for layer in hp.layers}
    return model, tok, hp, stats


if __name__ == "__main__":
    model, tok, hp, stats = golden_case()
    t = compute_targets(model, tok, get_arch(model), REQS, 2, PREFIXES, hp, progress=False)
    delta = memit.edit(model, tok, REQS, hp, stats=stats, apply=False, progress=False)
    tensors = {"z": t.z, "h": t.h, "loss": torch.tensor(t.loss, dtype=torch.float64),
               "steps": torch.tensor(t.steps)} | {f"delta.{k}": v for k, v in delta.weights.items()}
    save_tensors(Path(__file__).with_name("paper_loop.safetensors"), tensors, {"commit": "3e2a619"})
    print(t.steps, t.loss, t.clamped)
