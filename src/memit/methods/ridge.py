"""MEMIT with C₀ replaced by the identity, λ chosen per layer so that ‖ΔW‖ matches a reference edit.

The review asks whether MEMIT's preservation term λC₀ matters, or whether any ridge penalty
would do. Comparing λC₀ with λI at the same λ is unfair (C₀ and I have different scales), so
the ablation gives plain ridge the same budget instead: at each edited layer λ is set so that
‖ΔW_l‖/‖W_l‖ equals the reference edit's (from a result file). What then differs is only the
direction of the change, which is what C₀ decides.

With K = U S Vᵀ the ridge update is Δ(λ) = R V diag(s/(s² + λ)) Uᵀ, so
‖Δ(λ)‖² = Σ_j ‖(RV)_j‖² s_j²/(s_j² + λ)², decreasing in λ: one SVD, then a bisection on log λ.
"""

from __future__ import annotations

import math

import torch

from memit.lowrank import LowRank
from memit.methods.solver import Solver


class RidgeMatchNorm(Solver):
    """Solver for ``memit.edit``: ridge Δ = R Kᵀ(λ_l I + KKᵀ)⁻¹ with λ_l giving ‖Δ‖ = ``norms[layer]``."""

    name = "memit"

    def __init__(self, norms: dict[int, float]):
        self.norms = norms
        self.lams: dict[int, float] = {}
        self.svals: dict[int, torch.Tensor] = {}  # singular values of each layer's keys, for ``condition``

    def solve(self, layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
        u, s, vh = torch.linalg.svd(keys.double(), full_matrices=False)  # keys (d_ff, n) = U S Vᵀ
        rv = resid.double() @ vh.T  # (d_model, r): the residual in the key directions
        weight = (rv ** 2).sum(0)
        self.svals[layer] = s

        def norm(lam_: float) -> float:
            keep = s > 0
            return math.sqrt(float((weight[keep] * (s[keep] / (s[keep] ** 2 + lam_)) ** 2).sum()))

        target = self.norms[layer]
        if norm(0.0) <= target:  # even the minimum-norm change is smaller (λ → 0 is ridge's largest): λ = 0
            self.lams[layer] = 0.0
        else:
            lo, hi = -30.0, 30.0  # log10 λ; norm(10^-30) ≈ the maximum, norm(10^30) ≈ 0
            for _ in range(100):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if norm(10 ** mid) > target else (lo, mid)
            self.lams[layer] = 10 ** ((lo + hi) / 2)
        lam_l = self.lams[layer]
        scale = torch.where(s > 0, s / (s ** 2 + lam_l), torch.zeros_like(s))
        return LowRank(rv * scale, u.T)

    def condition(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float:
        """cond(λ_l I + KKᵀ): (λ_l + s_max²)/(λ_l + s_min²), s_min = 0 when n < d_ff. Called after
        the solve of the same layer, whose SVD it reuses."""
        s = self.svals[layer]
        smin = float(s[-1]) if keys.shape[1] >= keys.shape[0] else 0.0
        lam_l = self.lams[layer]
        return float("inf") if lam_l + smin ** 2 == 0 else (lam_l + float(s[0]) ** 2) / (lam_l + smin ** 2)

    def layer_info(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float, full: bool) -> dict:
        """λ_l and the norm asked for; λ_l = 0 means the budget was more than ridge can spend."""
        return {"lambda": self.lams[layer], "norm_asked": self.norms[layer]}
