"""The one step that the closed-form methods vary: how a layer's residuals and keys become ΔW.

MEMIT, MEMIT-seq, ROME, EMMET and AlphaEdit share the target vectors, the keys and the loop over
layers (methods/memit.py). They differ only in the system they solve at each layer. A Solver is
that system: its solve, its condition number (how many of float64's digits the solve keeps), and
the per-layer facts worth reporting. A new closed-form method is one Solver plus one line in the
registry (methods/__init__.py).

Arguments, everywhere: ``resid`` (d_model, n), ``keys`` (d_ff, n), ``c0`` the layer's plain
statistics C₀ (d_ff, d_ff), ``lam`` the preservation weight λ. The update is returned as factors.
"""

from __future__ import annotations

import torch

from memit.diagnostics import COND_MAX_DFF, cond_of_eigenvalues, spectrum, update_overlap
from memit.lowrank import LowRank


class Solver:
    """The interface, with the defaults a method may keep: no condition number, no extra facts."""

    name = "solver"  # the method's name in the delta's metadata

    def solve(self, layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
        raise NotImplementedError

    def condition(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float | None:
        """cond of the system the solve inverts, or None where the method has no such number."""
        return None

    def layer_info(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float, full: bool) -> dict:
        """Extra per-layer facts for the metadata; ``full`` asks for the expensive ones as well."""
        return {}

    def aux(self) -> dict:
        """What the solver keeps in memory for the caller beyond the metadata (delta.aux)."""
        return {}


class MemitSolve(Solver):
    """Δ = R Kᵀ (λC + KKᵀ)⁻¹ in float64, by a solve (never an explicit inverse), with

    C = C₀ + K_pK_pᵀ/λ + ρ·tr(C₀)/d_ff·I.

    ``prior`` (K_pK_pᵀ per layer, the keys of earlier batches) makes it MEMIT-seq: a new batch
    disturbs earlier edits as little as it disturbs ordinary text. ``ridge`` ρ adds a norm term on
    ΔW stated relative to C₀'s mean eigenvalue, so that it carries over between models.

    ``drift`` (W − W₀ per layer, (d_model, d_ff): what earlier edits of a sequence changed) moves
    that norm term from ΔW to W + ΔW − W₀, as ENCORE bounds the distance from the original weights:
    with μ = λρ·tr(C₀)/d_ff, Δ(λC + KKᵀ) = RKᵀ − μ(W − W₀), so each batch also pulls back part of
    what the batches before it moved. Δ is then no longer of rank n.
    """

    def __init__(self, ridge: float = 0.0, prior: dict[int, torch.Tensor] | None = None, name: str = "memit",
                 drift: dict[int, torch.Tensor] | None = None):
        self.ridge, self.prior, self.name, self.drift = ridge, prior or {}, name, drift or {}
        self.spectra: dict[int, dict] = {}
        self.per_request: dict[int, list[float]] = {}
        self._sys: dict | None = None  # the current layer's system, shared by solve, condition and layer_info

    def system_c0(self, layer: int, c0: torch.Tensor, lam: float) -> torch.Tensor:
        """C of λC + KKᵀ: C₀ with the earlier batches' keys and the ridge term added."""
        c = c0
        if layer in self.prior and lam > 0:
            c = c + self.prior[layer].to(c.device, c.dtype) / lam
        if self.ridge:
            c = c + self.ridge * float(c0.trace()) / c0.shape[0] * torch.eye(c0.shape[0], dtype=c.dtype, device=c.device)
        return c

    def _system(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> dict:
        """λC + KKᵀ of this layer in float64, built once for the solve, cond and the diagnostics
        (which then share its eigenvalues and the solve's A⁻¹K, instead of recomputing them)."""
        s = self._sys
        if s is None or s["layer"] != layer or s["keys"] is not keys or s["c0"] is not c0 or s["lam"] != lam:
            k = keys.double()
            s = self._sys = {"layer": layer, "keys": keys, "c0": c0, "lam": lam,
                             "a": lam * self.system_c0(layer, c0, lam).double() + k @ k.T}
        return s

    @staticmethod
    def _eig(s: dict) -> torch.Tensor:
        if "eig" not in s:
            s["eig"] = torch.linalg.eigvalsh(s["a"])
        return s["eig"]

    @staticmethod
    def _dirs(s: dict) -> torch.Tensor:
        """(λC + KKᵀ)⁻¹K: its columns are the requests' update directions."""
        if "dirs" not in s:
            s["dirs"] = torch.linalg.solve(s["a"], s["keys"].double())
        return s["dirs"]

    def solve(self, layer: int, resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
        if lam == 0:
            return solve_update(resid, keys, c0, lam)
        s = self._system(layer, keys, c0, lam)
        update = LowRank(resid.double(), self._dirs(s).T)
        if layer not in self.drift or not self.ridge:
            return update
        mu = lam * self.ridge * float(c0.trace()) / c0.shape[0]
        pull = torch.linalg.solve(s["a"], self.drift[layer].to(s["a"]).T).T  # (W − W₀)(λC + KKᵀ)⁻¹
        eye = torch.eye(pull.shape[1], dtype=pull.dtype, device=pull.device)
        return LowRank.cat([update, LowRank(-mu * pull, eye)])

    def condition(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> float | None:
        if lam <= 0 or c0.shape[0] > COND_MAX_DFF:
            return None
        return cond_of_eigenvalues(self._eig(self._system(layer, keys, c0, lam)))

    def layer_info(self, layer: int, keys: torch.Tensor, c0: torch.Tensor, lam: float, full: bool) -> dict:
        """With ``full``: the spectrum of the system and of KKᵀ, and how much the update directions
        of different requests overlap (the review's questions; an eigendecomposition per layer)."""
        if not full or lam <= 0:
            return {}
        s = self._system(layer, keys, c0, lam)
        info = {}
        spec = spectrum(keys, None, lam, ev_a=self._eig(s)) if c0.shape[0] <= COND_MAX_DFF else None
        if spec:
            self.spectra[layer] = {"eig": spec.pop("eig"), "eig_kk": spec.pop("eig_kk")}
            info |= {"cond_kk": spec["cond_kk"], "rank_kk": spec["rank_kk"]}
        overlap = update_overlap(keys, None, lam, dirs=self._dirs(s))
        if overlap:
            self.per_request[layer] = overlap.pop("per_request")
            info["update_overlap"] = overlap
        return info

    def aux(self) -> dict:
        return {"spectra": self.spectra, "per_request_overlap": self.per_request}


def solve_update(resid: torch.Tensor, keys: torch.Tensor, c0: torch.Tensor, lam: float) -> LowRank:
    """Δ = R Kᵀ (λC₀ + KKᵀ)⁻¹ in float64. The system is symmetric, so Δ = R · solve(A, K)ᵀ, kept as
    those two factors; Δ has rank n."""
    k = keys.double()
    if lam == 0:  # no preservation: the minimum-norm Δ with ΔK = R (least squares if K is not full rank)
        return LowRank(resid.double(), torch.linalg.pinv(k))
    a = lam * c0.double() + k @ k.T
    return LowRank(resid.double(), torch.linalg.solve(a, k).T)
