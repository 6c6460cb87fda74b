"""Why a fact's target-vector optimisation stops (``hp.stop``).

"paper" is MEMIT's rule: the total loss below ``v_loss_threshold``, or the step cap. "margin"
stops a fact as soon as every target token of every prompt row is top-1 by ``stop_margin`` nats,
or when δ sits at the norm clamp and its margin has stopped growing (more steps will not get it
there); the loss threshold and the cap stay as backstops.
"""

from __future__ import annotations

from memit.hparams import MemitHyperParams

STOP_REASONS = ("margin", "loss", "plateau", "cap")


def stop_reason(hp: MemitHyperParams, loss: float, margins: list[float], clamped: bool, last: bool) -> str | None:
    """Why a request stops after this forward pass, or None when it goes on."""
    if hp.stop == "margin" and margins[-1] >= hp.stop_margin:
        return "margin"
    if loss < hp.v_loss_threshold:
        return "loss"
    if (hp.stop == "margin" and clamped and len(margins) > hp.plateau_steps
            and margins[-1] - margins[-1 - hp.plateau_steps] < hp.plateau_gain):
        return "plateau"
    return "cap" if last else None


def stop_summary(requests: list[dict]) -> dict:
    """From a delta's per-request metadata: optimisation steps per fact, counted over every round
    (``steps_total`` where rounds ran), and how many facts each rule stopped (their last round)."""
    steps = [r.get("steps_total") or r["steps"] for r in requests]
    return {"mean_steps": sum(steps) / len(steps),
            "stopped_by": {k: sum(r.get("stop") == k for r in requests) for k in STOP_REASONS}}
