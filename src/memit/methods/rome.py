"""ROME (Meng et al., 2022), the paper's main baseline: one layer, one fact, rank one.

Ŵ = W + (v* − W k*)(C₀⁻¹k*)ᵀ / ((C₀⁻¹k*)ᵀ k*) makes Ŵk* = v* exactly while changing W as little
as possible in the C₀ metric. k* is the key averaged over the context prefixes, and it is used in
every place of the formula: with the un-averaged key in the denominator (a known bug of the
original code) Ŵk* ≠ v* and sequential ROME drifts. Here v* − W k* is the residual z − h of the
shared target vectors at that layer, so ROME reuses MEMIT's pipeline with one layer and this
solver. For N > 1 the requests are applied one after another, as the paper compares it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import torch

from memit import weights
from memit.delta import Delta
from memit.diagnostics import cond_of_eigenvalues
from memit.fingerprint import model_fingerprint
from memit.hparams import MemitHyperParams
from memit.lowrank import LowRank
from memit.methods.memit import edit as memit_edit
from memit.methods.solver import Solver
from memit.models.arch import get_arch
from memit.progress import tqdm
from memit.requests import EditRequest
from memit.stats import stats_for


class RomeSolve(Solver):
    """Rank-one equality-constrained update of one request (resid and keys have one column)."""

    name = "rome"

    def __init__(self):
        self._cond: dict[int, tuple[torch.Tensor, float]] = {}

    def solve(self, layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
        k = keys.double()
        u = torch.linalg.solve(c0.double(), k)  # C₀⁻¹k*, (d_ff, 1)
        return LowRank(resid.double(), u.T / (u.T @ k))

    def condition(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float:
        """cond(C₀): the same for every request of a sequence, so its eigenvalues are found once."""
        seen = self._cond.get(layer)
        if seen is None or seen[0] is not c0:
            seen = self._cond[layer] = (c0, cond_of_eigenvalues(torch.linalg.eigvalsh(c0.double())))
        return seen[1]


class EmmetSolve(Solver):
    """EMMET (Gupta et al., 2024): ROME's equality constraint for a whole batch, ΔW K = R exactly
    with the smallest change in the C₀ metric: ΔW = R (KᵀC₀⁻¹K)⁻¹ KᵀC₀⁻¹. For one request it is ROME.
    It needs linearly independent keys; MEMIT's λC₀ + KKᵀ does not."""

    name = "emmet"

    def solve(self, layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
        u = torch.linalg.solve(c0.double(), keys.double())  # C₀⁻¹K, (d_ff, n)
        m = keys.double().T @ u  # KᵀC₀⁻¹K, (n, n), symmetric
        return LowRank(resid.double(), torch.linalg.solve(m, u.T))

    def condition(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float:
        return cond_of_eigenvalues(torch.linalg.eigvalsh(keys.double().T @ torch.linalg.solve(c0.double(), keys.double())))


def edit(model, tokenizer, requests: list[EditRequest], hparams: MemitHyperParams, *, progress: bool = True,
         stats: dict[int, torch.Tensor] | None = None, checkpoint=None, **_) -> Delta:
    """ROME on ``hparams.rome_layer()``, request after request; the model is left edited.
    ``checkpoint``: the target-vector store of ``memit.edit`` (each target depends on the edits
    before it, so a rerun of the same sequence finds them)."""
    arch = get_arch(model)
    layer = hparams.rome_layer()
    hp = dataclasses.replace(hparams, layers=[layer], clamp_norm_factor=hparams.rome.clamp_norm_factor)
    if stats is None or layer not in stats:
        stats = stats_for(model, tokenizer, hp, progress=progress)
    name = arch.mlp_out_name(layer) + ".weight"
    w0 = weights.read(model, name).detach().clone()
    parts, metas = [], []
    base = model_fingerprint(model)
    # The model before request i is base + the ROME edits of requests 0..i-1 with these settings:
    # a running hash of those names it without rehashing the weights for every request.
    state = hashlib.sha256(json.dumps([base, hp.to_dict()], default=str).encode())
    solve = RomeSolve()
    try:
        for r in tqdm(requests, desc=f"ROME, layer {layer}", disable=not progress or len(requests) < 2):
            d = memit_edit(model, tokenizer, [r], hp, stats=stats, solver=solve, progress=False,
                           fingerprint=f"rome:{state.hexdigest()}", checkpoint=checkpoint)
            state.update(json.dumps(dataclasses.astuple(r), default=str).encode())
            parts.append(d.factors[name])
            metas.append(d.meta)
    except BaseException:
        weights.write(model, name, w0)
        raise
    # The model ends as base + the sum of the rank-one updates, computed once in float64 from their
    # factors, so applying the saved delta (either form) reproduces it exactly.
    factors = LowRank.cat(parts)
    total = factors.dense()
    weights.write(model, name, (w0.float() + total.to(w0.device)).to(w0.dtype))
    meta = metas[0] | {
        "method": "rome", "n_requests": len(requests), "model_fingerprint": base,
        "requests": [m["requests"][0] for m in metas],
        "layers_info": [m["layers_info"][0] | {"case_id": m["requests"][0]["case_id"]} for m in metas],
        "resid_after": sum(m["resid_after"] for m in metas) / len(metas),
        "timings": {k: sum(m["timings"][k] for m in metas) for k in metas[0]["timings"]},
    }
    return Delta.written(model, {name: w0}, {name: total}, meta, {name: factors})
