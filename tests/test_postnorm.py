"""Gemma 2/3's norm after the MLP: each layer is asked for the change the norm turns into the
wanted residual change, and an edit then gets there without blowing up the weights."""

import torch
from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm

import memit
from helpers import tiny_model
from memit.hparams import MemitHyperParams
from memit.postnorm import pre_norm_change


def _norm(kind, d: int, weight: torch.Tensor) -> torch.nn.Module:
    norm = kind(d)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm.double()


def test_the_normalised_output_moves_by_the_reachable_part_of_the_asked_change():
    """An RMSNorm's outputs are the vectors γ ⊙ u with rms(u) = 1: of a small change r, the part
    along that surface (r less its component on the surface's normal a/γ) is made, to first order."""
    torch.manual_seed(0)
    for kind, w in ((Gemma3RMSNorm, torch.randn(16) * 0.3), (LlamaRMSNorm, torch.randn(16) * 0.3 + 1)):  # 1 + w, w
        norm = _norm(kind, 16, w)
        y = torch.randn(16, 3, dtype=torch.float64) * 5
        out = norm(y.T).T
        gamma = norm(torch.ones(1, 16, dtype=torch.float64))[0][:, None]
        normal = out / gamma / gamma
        for scale in (1e-3, 1e-2):
            r = torch.randn(16, 3, dtype=torch.float64) * scale * out.norm(dim=0)
            reachable = r - normal * (normal * r).sum(0) / normal.pow(2).sum(0)
            got = norm((y + pre_norm_change(norm, y, r)).T).T - out
            assert ((got - reachable).norm(dim=0) / r.norm(dim=0)).max() < 20 * scale
            naive = norm((y + r).T).T - out  # what the plain solve asks for
            assert ((naive - reachable).norm(dim=0) / r.norm(dim=0)).min() > 0.5
    norm = _norm(Gemma3RMSNorm, 16, torch.randn(16) * 0.3)
    with torch.no_grad():
        norm.weight[:3] = -1.0  # scale 1 + w = 0: those channels are always 0
    change = pre_norm_change(norm, y, torch.randn(16, 3, dtype=torch.float64))
    assert torch.isfinite(change).all() and norm((y + change).T).T[:3].abs().max() == 0


def test_a_large_change_goes_to_the_nearest_output_the_norm_can_give():
    """Scales γ that span orders of magnitude (as a trained Gemma's do): dividing the wanted output
    by γ puts nearly all of y on the small-γ channels and the output collapses, far from the
    target. The answer is the nearest reachable output: no point of the norm's output surface
    near it is nearer, and it is nearer than the first-order answer."""
    torch.manual_seed(1)
    d = 32
    norm = _norm(LlamaRMSNorm, d, torch.logspace(-2, 2.5, d)[torch.randperm(d)])
    y = torch.randn(d, 4, dtype=torch.float64)
    out = norm(y.T).T
    r = torch.randn(d, 4, dtype=torch.float64) * 0.5 * out.norm(dim=0)
    got = norm((y + pre_norm_change(norm, y, r)).T).T
    miss = (got - out - r).norm(dim=0)
    gamma = norm(torch.ones(1, d, dtype=torch.float64))[0][:, None]
    first_order = gamma * (out + r) / gamma / ((out + r) / gamma).pow(2).mean(0).sqrt()
    assert (miss < 0.9 * (first_order - out - r).norm(dim=0)).all()
    u = got / gamma
    for _ in range(200):  # nearby points γ ⊙ u' with rms(u') = 1
        v = u + 0.05 * torch.randn_like(u)
        v = v / v.pow(2).mean(0).sqrt()
        assert ((gamma * v - out - r).norm(dim=0) >= miss - 1e-9).all()


def test_a_gemma3_edit_moves_towards_its_targets_with_a_small_update(bpe, corpus_file, monkeypatch):
    import dataclasses

    import memit.models.arch as arch_mod

    reqs = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
            memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano")]
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=5, v_lr=0.5, prefixes=["Because of it. "],
                          stats_corpus=corpus_file, stats_tokens=1024, stats_seq_len=32, lam=1.0)
    def edited(model):
        delta = memit.edit(model, bpe, reqs, hp, progress=False)
        delta.revert(model)
        return delta.meta["layers_info"][0]["resid_norm"], delta.meta["resid_after"], \
            max(x["delta_rel_norm"] for x in delta.meta["layers_info"])

    model = tiny_model("gemma3_text", bpe)
    with torch.no_grad():  # a trained model's post-MLP norms are far from the identity
        for layer in model.model.layers:
            layer.post_feedforward_layernorm.weight.uniform_(-0.9, 2.0)
    first, after, worst = edited(model)
    assert after < 0.8 * first and worst < 1  # towards the targets, with a modest change
    plain = dataclasses.replace(arch_mod.ARCHS["gemma3_text"], post_mlp_norm=None)
    monkeypatch.setitem(arch_mod.ARCHS, "gemma3_text", plain)  # the solve that ignores the norm
    first, after, worst = edited(model)
    assert after > first and worst > 10  # further from the targets, and the weights blown up
