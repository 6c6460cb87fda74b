"""Editing methods. All share requests, target vectors, keys and statistics, and return a Delta."""

from __future__ import annotations

import torch

from memit.delta import Delta
from memit.hparams import MemitHyperParams
from memit.methods import ft, rome, sequential
from memit.methods.memit import EditError, edit, solve_update
from memit.methods.rounds import edit_in_rounds
from memit.requests import EditRequest

METHODS = ("memit", "rome", "ft", "ft-w", "memit-seq", "alphaedit", "emmet")
REEDIT = ("memit", "memit-seq", "alphaedit")  # the ones whose update can keep earlier keys (re-edit rounds)


def run(method: str, model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *,
        prior: dict[int, torch.Tensor] | None = None, progress: bool = True, checkpoint=None,
        stats: dict[int, torch.Tensor] | None = None) -> Delta:
    """Edit with ``method``, verify every request, and (``hp.rounds`` > 1, methods in REEDIT)
    edit again the ones that do not hold. ``prior`` (K_pK_pᵀ per layer of earlier batches) is used
    by memit-seq and alphaedit; plain memit, rome and ft ignore earlier batches, as they do in the
    literature. ``stats``: C₀ per layer to use instead of the model's own (a sequence's base
    statistics); re-edit rounds use the first round's, not those of the model they edited."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if method in REEDIT and hp.rounds > 1 and stats is None and hp.preservation == "cov":
        from memit.stats import stats_for

        stats = stats_for(model, tokenizer, hp, progress=progress)

    def once(reqs, hp_, kk, k):
        # later rounds keep the earlier rounds' keys: memit becomes memit-seq there
        m = "memit-seq" if method == "memit" and k > 1 else method
        return _once(m, model, tokenizer, reqs, hp_, prior=kk, progress=progress, checkpoint=checkpoint, stats=stats)

    return edit_in_rounds(model, tokenizer, requests, hp, once, prior=prior, reedit=method in REEDIT)


def _once(method: str, model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *,
          prior: dict[int, torch.Tensor] | None = None, progress: bool = True, checkpoint=None,
          stats: dict[int, torch.Tensor] | None = None) -> Delta:
    if method == "memit":
        return edit(model, tokenizer, requests, hp, progress=progress, checkpoint=checkpoint, stats=stats)
    if method == "emmet":
        return edit(model, tokenizer, requests, hp, progress=progress, checkpoint=checkpoint, solver=rome.EmmetSolve(),
                    method="emmet", stats=stats)
    if method == "rome":
        return rome.edit(model, tokenizer, requests, hp, progress=progress, checkpoint=checkpoint, stats=stats)
    if method in ("ft", "ft-w"):
        return ft.edit(model, tokenizer, requests, hp, progress=progress, weight_decay=method == "ft-w")
    if method == "memit-seq":
        return sequential.edit_memit_seq(model, tokenizer, requests, hp, prior=prior, progress=progress,
                                         checkpoint=checkpoint, stats=stats)
    if method == "alphaedit":
        return sequential.edit_alphaedit(model, tokenizer, requests, hp, prior=prior, progress=progress,
                                         checkpoint=checkpoint, stats=stats)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


__all__ = ["METHODS", "EditError", "edit", "run", "solve_update"]
