"""The residual change an edit asks of a layer whose MLP output is normalised before it is added.

MEMIT's solve assumes the MLP's output W_out k is added to the residual stream as it is, so the
layer's share R of the remaining change is what ΔW k must produce. Gemma 2 and 3 put an RMSNorm
after the MLP: the residual gets γ ⊙ y / rms(y) with y = W_out k. That norm is blind to the scale
of y, so asking y to move by R moves the residual by much less, the next layer finds most of the
change still missing, and the update grows from layer to layer until the model breaks (measured
on Gemma 3 270M: ‖ΔW‖/‖W‖ above 50 at the last edited layer). Instead, each layer is asked for the
change of y whose *normalised* output moves by R: with out = norm(y), the wanted output is
out + R; dividing by γ gives the direction y must take, and y keeps its own rms, which the norm
ignores anyway. The part of R that the norm can produce is produced, exactly to first order; a
channel whose scale γ is zero (Gemma 3 270M has some) cannot be moved and is left as it is.
"""

from __future__ import annotations

import torch


def pre_norm_change(norm: torch.nn.Module, y: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
    """The change of the MLP outputs ``y`` (d_model, n) that moves ``norm``'s outputs by ``resid``
    (d_model, n). ``norm`` is an RMSNorm (any scale convention: its scale γ is read back as the
    norm of a vector of ones)."""
    p = next(norm.parameters())
    with torch.no_grad():
        gamma = norm(torch.ones(1, y.shape[0], dtype=p.dtype, device=p.device))[0].to(y)
        out = norm(y.T.to(p.dtype).to(p.device)).T.to(y)

        def rms(x: torch.Tensor) -> torch.Tensor:
            return x.pow(2).mean(0, keepdim=True).sqrt()

        # a channel the norm scales by (nearly) zero stays 0 whatever y does: keep it where it is
        live = gamma.abs() > 1e-6 * gamma.abs().max()
        want = torch.where(live[:, None], (out + resid) / torch.where(live, gamma, 1)[:, None], y / rms(y))
        return want / rms(want) * rms(y) - y
