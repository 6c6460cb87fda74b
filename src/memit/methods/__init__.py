"""Editing methods. All share requests, target vectors, keys and statistics, and return a Delta.

``METHODS`` is the one list of them: the CLI's ``--method``, ``memit eval``, the playground and
docs/methods.md (a test keeps its table in step) read it. A method is one function that makes
one round of an edit; the closed-form ones are methods/memit.py's pipeline with their own Solver
(methods/solver.py). ``run`` adds what every method gets: verification, and re-edit rounds for
the methods whose update can keep the keys of the rounds before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from memit import weights
from memit.delta import Delta
from memit.hparams import MemitHyperParams
from memit.methods import ft, rome, sequential
from memit.methods.memit import EditError, edit
from memit.methods.rounds import edit_in_rounds
from memit.methods.solver import Solver, solve_update
from memit.requests import EditRequest


@dataclass(frozen=True)
class Method:
    """``edit(model, tokenizer, requests, hp, *, prior, progress, checkpoint, stats) -> Delta`` makes
    one round; ``prior`` holds K_pK_pᵀ per layer of the batches (and rounds) edited before."""
    name: str
    edit: Callable[..., Delta]
    summary: str
    reedit: bool = False  # its update keeps earlier keys, so facts that fail are edited again
    anchored: bool = False  # it takes ``base``, the original weights of a sequence (edited_weights)


def _memit(model, tokenizer, requests, hp, *, prior=None, **kw) -> Delta:
    return edit(model, tokenizer, requests, hp, **kw)  # plain MEMIT ignores earlier batches, as in the paper


def _emmet(model, tokenizer, requests, hp, *, prior=None, **kw) -> Delta:
    return edit(model, tokenizer, requests, hp, solver=rome.EmmetSolve(), **kw)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("memit", _memit, "MEMIT: many facts at once, spread over a band of layers", reedit=True),
    Method("rome", rome.edit, "ROME: one layer, one fact at a time, rank one"),
    Method("ft", ft.edit, "FT-L: fine-tune one layer, each weight bounded"),
    Method("ft-w", functools.partial(ft.edit, weight_decay=True), "FT-W: fine-tune one layer with weight decay"),
    Method("emmet", _emmet, "EMMET: ROME's equality constraint for a whole batch"),
    Method("memit-seq", sequential.edit_memit_seq, "MEMIT-seq: MEMIT that preserves earlier batches' keys",
           reedit=True),
    Method("encore", sequential.edit_encore, "ENCORE: MEMIT-seq stopping each fact once its target is most "
           "probable, with a norm term on the distance from the original weights", reedit=True, anchored=True),
    Method("alphaedit", sequential.edit_alphaedit, "AlphaEdit: the update projected on C₀'s null space",
           reedit=True),
]}


def run(method: str, model, tokenizer, requests: list[EditRequest], hp: MemitHyperParams, *,
        prior: dict[int, torch.Tensor] | None = None, progress: bool = True, checkpoint=None,
        stats: dict[int, torch.Tensor] | None = None, base: dict[str, torch.Tensor] | None = None) -> Delta:
    """Edit with ``method``, verify every request, and (``hp.rounds`` > 1, methods with ``reedit``)
    edit again the ones that do not hold. ``prior`` (K_pK_pᵀ per layer of earlier batches) is used
    by memit-seq and alphaedit; plain memit, rome and ft ignore earlier batches, as they do in the
    literature. ``stats``: C₀ per layer to use instead of the model's own (a sequence's base
    statistics); re-edit rounds use the first round's, not those of the model they edited.
    ``base``: the sequence's original weights (``edited_weights`` before its first edit), for the
    methods that are ``anchored`` to them."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    m = METHODS[method]
    if m.reedit and hp.rounds > 1 and stats is None and hp.preservation == "cov":
        from memit.stats import stats_for

        stats = stats_for(model, tokenizer, hp, progress=progress)

    def once(reqs, hp_, kk, k):
        # later rounds keep the earlier rounds' keys: memit becomes memit-seq there
        edit_ = METHODS["memit-seq"].edit if method == "memit" and k > 1 else m.edit
        anchor = {"base": base} if m.anchored else {}
        return edit_(model, tokenizer, reqs, hp_, prior=kk, progress=progress, checkpoint=checkpoint, stats=stats,
                     **anchor)

    with weights.frozen(model):
        return edit_in_rounds(model, tokenizer, requests, hp, once, prior=prior, reedit=m.reedit)


__all__ = ["METHODS", "EditError", "Method", "Solver", "edit", "run", "solve_update"]
