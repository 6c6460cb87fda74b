"""How trustworthy one layer's solve is: conditioning, spectrum, and interference between facts.

The review of the paper asks for exactly these. cond(λC₀ + KKᵀ) says how many digits the float64
solve keeps; cond(KKᵀ) alone shows what λC₀ buys (with fewer requests than d_ff, KKᵀ is singular).
The update of request i moves the layer along column i of (λC₀ + KKᵀ)⁻¹K; when two such
directions nearly coincide the two facts compete for the same change and at most one can win.
"""

from __future__ import annotations

import torch

COND_MAX_DFF = 8192  # beyond this an eigendecomposition per layer costs more than the edit itself


def condition_number(keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float | None:
    """cond(λC₀ + KKᵀ) from its eigenvalues (it is symmetric positive semi-definite)."""
    if c0.shape[0] > COND_MAX_DFF:
        return None
    k = keys.double()
    ev = torch.linalg.eigvalsh(lam * c0.double() + k @ k.T)
    return cond_of_eigenvalues(ev)


def cond_of_eigenvalues(ev: torch.Tensor) -> float:
    return float(ev[-1] / ev[0]) if ev[0] > 0 else float("inf")


def text_change(delta_w: torch.Tensor, weight: torch.Tensor, c0: torch.Tensor) -> float | None:
    """tr(ΔW C₀ ΔWᵀ) / tr(W C₀ Wᵀ): how much the layer's output on ordinary text moves, as a
    share of its mean square. It is the cost MEMIT's λ term prices, so it compares methods that
    protect the preserved text differently (MEMIT's λC₀ against AlphaEdit's null space).
    ``delta_w`` and ``weight`` are (d_model, d_ff)."""
    if c0.shape[0] > COND_MAX_DFF:
        return None
    c = c0.double()
    d, w = delta_w.double().to(c.device), weight.double().to(c.device)
    return float(((d @ c) * d).sum() / ((w @ c) * w).sum())


def max_key_overlap(keys: torch.Tensor) -> float | None:
    """Largest |cosine| between the keys of two different requests."""
    return _max_abs_cos(keys)[1] if keys.shape[1] > 1 else None


def _max_abs_cos(cols: torch.Tensor, block: int = 2048) -> tuple[torch.Tensor, float]:
    """Per column, the largest |cosine| with any other column (in blocks: N may be 10,000)."""
    x = torch.nn.functional.normalize(cols.double(), dim=0)
    n = x.shape[1]
    per = torch.zeros(n, dtype=torch.float64)
    for s in range(0, n, block):
        g = (x[:, s: s + block].T @ x).abs()
        idx = torch.arange(g.shape[0])
        g[idx, idx + s] = 0
        per[s: s + block] = g.max(1).values.cpu()
    return per, float(per.max())


def update_overlap(keys: torch.Tensor, c0: torch.Tensor | None, lam: float, dirs: torch.Tensor | None = None
                   ) -> dict | None:
    """|cosine| between the update directions of different requests: mean and 95th percentile of
    each request's largest overlap, the maximum, and the per-request values. ``dirs`` are those
    directions when the solve already has them (then ``c0`` is not read)."""
    if keys.shape[1] < 2 or lam <= 0:
        return None
    if dirs is None:
        k = keys.double()
        dirs = torch.linalg.solve(lam * c0.double() + k @ k.T, k)  # columns of (λC₀ + KKᵀ)⁻¹K
    per, top = _max_abs_cos(dirs)
    return {"mean": float(per.mean()), "p95": float(per.quantile(0.95)), "max": top, "per_request": per.tolist()}


def spectrum(keys: torch.Tensor, c0: torch.Tensor | None, lam: float, ev_a: torch.Tensor | None = None
             ) -> dict | None:
    """Eigenvalues of λC₀ + KKᵀ and of KKᵀ alone (ascending), with both condition numbers. ``ev_a``
    are the first when the caller already has them (then ``c0`` is not read)."""
    if keys.shape[0] > COND_MAX_DFF:
        return None
    k = keys.double()
    kk = k @ k.T
    if ev_a is None:
        ev_a = torch.linalg.eigvalsh(lam * c0.double() + kk)
    ev_k = torch.linalg.eigvalsh(kk)
    rank = int((ev_k > ev_k[-1] * ev_k.shape[0] * torch.finfo(torch.float64).eps).sum())
    return {"cond": cond_of_eigenvalues(ev_a), "cond_kk": cond_of_eigenvalues(ev_k) if rank == ev_k.shape[0] else float("inf"),
            "rank_kk": rank, "eig": ev_a.tolist(), "eig_kk": ev_k.tolist()}
