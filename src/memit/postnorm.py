"""The residual change an edit asks of a layer whose MLP output is normalised before it is added.

MEMIT's solve assumes the MLP's output W_out k is added to the residual stream as it is, so the
layer's share R of the remaining change is what ΔW k must produce. Gemma 2 and 3 put an RMSNorm
after the MLP: the residual gets γ ⊙ y / rms(y) with y = W_out k. That norm is blind to the scale
of y, so asking y to move by R moves the residual by much less, the next layer finds most of the
change still missing, and the update grows from layer to layer until the model breaks.

Instead each layer is asked for the y whose normalised output is the reachable output nearest to
out + R. The norm's outputs are exactly the vectors γ ⊙ u with rms(u) = 1, so that is

    u = argmin ‖γ ⊙ u − (out + R)‖  subject to  rms(u) = 1,   y' = u · rms(y).

Dividing out + R by γ (the first-order answer) is only right when every channel's γ is of one
size. Trained norms are not: Gemma 3 270M's scales span four orders of magnitude within a layer,
so R / γ is huge on the few small-γ channels, the rms of y' follows them, and every other channel
shrinks: the residual moves by about −out, far from R and orthogonal to it. The constrained
minimum has the closed form u_i = γ_i t_i / (γ_i² + μ), t = out + R, with the one scalar μ per
column that gives rms(u) = 1 (a trust-region problem, solved by bisection); small-γ channels then
get little of the change instead of all of it. Channels whose γ is zero (Gemma 3 270M has some)
cannot be moved and keep y's own values.
"""

from __future__ import annotations

import torch

_BISECTIONS = 200  # float64 halvings: the bracket shrinks far below rounding


def nearest_on_sphere(gamma: torch.Tensor, t: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """u minimising ‖γ ⊙ u − t‖ with ‖u‖² = budget, per column of ``t`` (d, n); ``gamma`` (d,)
    nonzero, ``budget`` (n,) positive."""
    g = gamma[:, None]
    g2min = gamma.pow(2).min()

    def norm2(mu: torch.Tensor) -> torch.Tensor:
        return (g * t / (g.pow(2) + mu)).pow(2).sum(0)

    lo = torch.full_like(budget, float(-g2min))  # below it some γ_i² + μ ≤ 0: not the minimum
    hi = (g * t).norm(dim=0) / budget.sqrt()  # there ‖u‖² ≤ budget
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        big = norm2(mid) > budget
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    return g * t / (g.pow(2) + hi)


def scale(norm: torch.nn.Module) -> torch.Tensor:
    """The RMSNorm's per-channel scale γ, whatever its convention (w or 1 + w): its output for a
    vector of ones."""
    p = next(norm.parameters())
    with torch.no_grad():
        return norm(torch.ones(1, p.shape[-1], dtype=p.dtype, device=p.device))[0]


def output_change(norm: torch.nn.Module, y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """How the block's output moves when ``d`` is added to the MLP output ``y`` before ``norm``
    (differentiable: the target vectors' δ lives on y)."""
    p = next(norm.parameters())
    return (norm((y + d).to(p.dtype)) - norm(y.to(p.dtype))).float()


def reach(model: torch.nn.Module, norm_names: list[str]) -> list[float]:
    """‖γ‖ of each named norm: how long the outputs behind it are, whatever the MLP does."""
    return [float(scale(model.get_submodule(name)).norm()) for name in norm_names]


def pre_norm_change(norm: torch.nn.Module, y: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
    """The change of the MLP outputs ``y`` (d_model, n) that moves ``norm``'s outputs (an RMSNorm)
    as near as they can go to their current value plus ``resid`` (d_model, n)."""
    p = next(norm.parameters())
    with torch.no_grad():
        gamma = scale(norm).to(y)
        out = norm(y.T.to(p.dtype).to(p.device)).T.to(y)
        rms = y.pow(2).mean(0, keepdim=True).sqrt()
        # a channel the norm scales by (nearly) zero stays 0 whatever y does: keep it where it is
        live = gamma.abs() > 1e-6 * gamma.abs().max()
        u = y / rms
        budget = y.shape[0] - u[~live].pow(2).sum(0)
        # the norm's ε makes its outputs a little shorter than γ ⊙ u, more so the smaller y is:
        # by the factor it has now, which stays since y' keeps y's rms
        gu = gamma[live, None] * u[live]
        short = (out[live] * gu).sum(0) / gu.pow(2).sum(0)
        u[live] = nearest_on_sphere(gamma[live], (out + resid)[live] / short, budget)
        return u * rms - y
