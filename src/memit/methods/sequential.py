"""Editing over time, batch after batch: MEMIT-seq and AlphaEdit (docs/algorithm.md §2, sequential).

Both carry, for each edited layer, the sum K_pK_pᵀ of the keys of every batch committed before
(the journal keeps the keys, so the sum can be rebuilt for any step).

MEMIT-seq adds it to the preservation term: Δ = R Kᵀ (λC₀ + K_pK_pᵀ + KKᵀ)⁻¹, so a new batch
disturbs earlier edits as little as it disturbs the text behind C₀. That is plain MEMIT with
C₀ replaced by C₀ + K_pK_pᵀ/λ.

AlphaEdit (Fang et al., ICLR 2025) drops λC₀ and projects the update onto the null space of C₀
instead: P = ÛÛᵀ from the eigenvectors of C₀ with eigenvalue below a threshold, and
Δ = R Kᵀ P (K_pK_pᵀP + KKᵀP + αI)⁻¹. Then ΔW k = 0 for every k in the span the statistics cover
(P k = 0), so what the model did on ordinary text is untouched exactly, however many batches come.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from memit import weights
from memit.delta import Delta
from memit.files import CorruptFileError, load_tensors, save_tensors
from memit.fingerprint import tensor_fingerprint
from memit.hparams import MemitHyperParams
from memit.lowrank import LowRank
from memit.methods.memit import EditError, memit_solver
from memit.methods.memit import edit as memit_edit
from memit.methods.solver import Solver
from memit.models.arch import as_math, get_arch
from memit.models.loading import cache_dir
from memit.requests import EditRequest
from memit.stats import stats_for


def sequence_stats(model, tokenizer, hp: MemitHyperParams, progress: bool = True) -> dict[int, torch.Tensor] | None:
    """The C₀ every batch of a sequence uses when ``hp.sequential_stats`` is "base": call it on the
    unedited model, before the journal is replayed. None for "current" (each batch computes its own)."""
    if hp.sequential_stats not in ("current", "base"):
        raise EditError(f"sequential_stats must be current or base, not {hp.sequential_stats!r}")
    return stats_for(model, tokenizer, hp, progress=progress) if hp.sequential_stats == "base" else None


def edited_weights(model, hp: MemitHyperParams) -> dict[str, torch.Tensor]:
    """A copy of the weights MEMIT edits (each edited layer's MLP output), by parameter name: the
    original weights a sequence's later batches measure their drift from."""
    arch = get_arch(model)
    names = [arch.mlp_out_name(layer) + ".weight" for layer in hp.layers]
    return {name: weights.read(model, name).detach().to("cpu", copy=True) for name in names}  # off the GPU


def drift(model, hp: MemitHyperParams, base: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """W − W₀ per edited layer, float64 in the algorithm's orientation (d_model, d_ff)."""
    arch = get_arch(model)
    out = {}
    for layer in hp.layers:
        name = arch.mlp_out_name(layer) + ".weight"
        w = weights.read(model, name)
        out[layer] = as_math(w.double() - base[name].to(w.device).double(), arch)
    return out



def edit_encore(model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *,
                prior: dict[int, torch.Tensor] | None = None, base: dict[str, torch.Tensor] | None = None,
                **kw) -> Delta:
    """ENCORE (Gupta et al., 2025): MEMIT-seq whose facts stop as soon as each target is the most
    probable continuation, with a norm term on the distance from the original weights ``base``
    (``edited_weights`` of the unedited model; without it, on ΔW alone, which is the same on a
    first edit)."""
    hp = replace(hp, stop="margin", stop_margin=hp.encore.stop_margin, ridge=hp.encore.ridge)
    d = drift(model, hp, base) if base else None
    return memit_edit(model, tokenizer, requests, hp, solver=memit_solver(hp, prior, "encore", d), **kw)



def edit_memit_seq(model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *,
                   prior: dict[int, torch.Tensor] | None = None, progress: bool = True,
                   stats: dict[int, torch.Tensor] | None = None, **kw) -> Delta:
    """MEMIT with the keys of earlier batches (``prior``: K_pK_pᵀ per layer) in the preservation term."""
    return memit_edit(model, tokenizer, requests, hp, stats=stats, progress=progress,
                      solver=memit_solver(hp, prior, "memit-seq"), **kw)


def null_projector(c0: torch.Tensor, threshold: float, energy: float | None = None) -> torch.Tensor:
    """P = ÛÛᵀ over the eigenvectors of C₀ with eigenvalue < threshold, or, with ``energy``, over
    the smallest ones that together hold at most that share of tr C₀ (float64). Cached on disk by
    the content of C₀: an eigendecomposition of a large layer takes minutes."""
    rule = f"e{energy:g}" if energy is not None else f"{threshold:g}"
    path = cache_dir() / "stats" / f"null-{tensor_fingerprint(c0)[:16]}-{rule}.safetensors"
    try:
        return load_tensors(path)[0]["P"].double()
    except CorruptFileError:  # missing or damaged: compute it
        pass
    ev, vecs = torch.linalg.eigh(c0.double())  # ascending
    if energy is None:
        null = ev < threshold
    else:
        null = ev.clamp(min=0).cumsum(0) <= energy * ev.clamp(min=0).sum()
    u = vecs[:, null]
    p = u @ u.T
    save_tensors(path, {"P": p}, {"rule": rule, "null_dim": int(u.shape[1]), "d_ff": int(c0.shape[0])})
    return p


def null_energy(p: torch.Tensor, c0: torch.Tensor) -> float:
    """The share of ordinary text's key energy (tr C₀) that lies in the null space: what the
    projection leaves exposed. Near 0 is AlphaEdit's premise; on a full-rank C₀ it need not be."""
    return float((p * c0.double()).sum() / c0.double().trace())


class AlphaEditSolve(Solver):
    name = "alphaedit"

    def __init__(self, projectors: dict[int, torch.Tensor], prior: dict[int, torch.Tensor] | None, alpha: float):
        self.p, self.prior, self.alpha = projectors, prior or {}, alpha

    def _system(self, layer: int, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = keys.double()
        p = self.p[layer].to(k.device)
        kk = k @ k.T
        if layer in self.prior:
            kk = kk + self.prior[layer].to(k.device, torch.float64)
        return p @ kk + self.alpha * torch.eye(k.shape[0], dtype=torch.float64, device=k.device), p

    def solve(self, layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
        a, p = self._system(layer, keys)
        x = torch.linalg.solve(a, p @ keys.double())  # (d_ff, n), lies in range(P); Δ = R xᵀ
        return LowRank(resid.double(), x.T)

    def condition(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float:
        return float(torch.linalg.cond(self._system(layer, keys)[0]))  # 2-norm: the system is not symmetric

    def layer_info(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float, full: bool) -> dict:
        """The null space's dimension, and the share of ordinary text's key energy it holds."""
        p = self.p[layer]
        return {"null_dim": round(float(p.trace())), "null_energy": null_energy(p, c0)}


def edit_alphaedit(model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *,
                   prior: dict[int, torch.Tensor] | None = None, progress: bool = True,
                   stats: dict[int, torch.Tensor] | None = None, **kw) -> Delta:
    t = time.perf_counter()
    stats = stats if stats is not None else stats_for(model, tokenizer, hp, progress=progress)
    spent = time.perf_counter() - t
    t = time.perf_counter()
    projectors = {layer: null_projector(stats[layer], hp.alphaedit.null_threshold, hp.alphaedit.null_energy) for layer in hp.layers}
    spent_p = time.perf_counter() - t
    delta = memit_edit(model, tokenizer, requests, hp, stats=stats, progress=progress,
                       solver=AlphaEditSolve(projectors, prior, hp.alphaedit.alpha), **kw)
    delta.meta["timings"]["stats"] += spent  # found here, before the edit: counted all the same
    delta.meta["timings"]["projector"] = spent_p
    return delta


def key_outer_sums(keys: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """K Kᵀ per layer (float64) of one batch's keys (``delta.aux["keys"]``, d_ff × n)."""
    return {layer: k.double() @ k.double().T for layer, k in keys.items()}
