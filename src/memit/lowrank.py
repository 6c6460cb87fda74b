"""A weight change kept as its two factors, ΔW = left · right.

Every closed-form method here changes a weight by a matrix of rank at most the number of facts:
MEMIT's R·((λC₀ + KKᵀ)⁻¹K)ᵀ, ROME's rank-one update, EMMET's and AlphaEdit's. Kept as factors, a
delta of a few facts is kilobytes instead of megabytes, and it is already a LoRA adapter. The
factors are float64 and ``dense`` is the single product that the edit itself applied, so a delta
rebuilt from its factors lands on the same bits. ``transposed`` marks a weight stored as (in, out),
like GPT-2's Conv1D: the factors stay in the (out, in) orientation of the math.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LowRank:
    left: torch.Tensor  # (out, r)
    right: torch.Tensor  # (r, in)
    transposed: bool = False

    @property
    def rank(self) -> int:
        return self.left.shape[1]

    def dense(self) -> torch.Tensor:
        """ΔW in the weight's storage orientation, float64."""
        d = self.left.double() @ self.right.double()
        return d.T if self.transposed else d

    def stored_as(self, transposed: bool) -> LowRank:
        return LowRank(self.left, self.right, transposed)

    def nbytes(self) -> int:
        return (self.left.numel() + self.right.numel()) * 8

    @staticmethod
    def cat(parts: list[LowRank]) -> LowRank:
        """The sum of several changes of one weight, as one pair of factors of the summed rank."""
        return LowRank(torch.cat([p.left.double() for p in parts], dim=1),
                       torch.cat([p.right.double() for p in parts], dim=0), parts[0].transposed)

    def truncated(self, rank: int) -> tuple[LowRank, float]:
        """The best approximation of rank ``rank`` (truncated SVD) and its relative error ‖ΔW − ΔWᵣ‖/‖ΔW‖.

        The SVD is of the small core of two QR factorisations, never of the dense matrix.
        """
        ql, rl = torch.linalg.qr(self.left.double())
        qr, rr = torch.linalg.qr(self.right.double().T)
        u, s, vh = torch.linalg.svd(rl @ rr.T)
        keep = min(rank, int(s.numel()))
        total = float(s.square().sum())
        err = (float(s[keep:].square().sum()) / total) ** 0.5 if total > 0 else 0.0
        return LowRank(ql @ (u[:, :keep] * s[:keep]), vh[:keep] @ qr.T, self.transposed), err


def factorise(dense: torch.Tensor, transposed: bool = False, tol: float = 0.0) -> LowRank:
    """Factors of a dense change (by SVD), for changes that were not made as factors, such as
    fine-tuning's. ``tol`` drops singular values below ``tol`` times the largest."""
    m = dense.double()
    m = m.T if transposed else m
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    keep = int((s > tol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return LowRank(u[:, :keep] * s[:keep], vh[:keep], transposed)
