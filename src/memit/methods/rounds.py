"""Verify every fact after an edit, and edit again the ones that did not take.

Round 1 is the edit as asked. Each later round takes the requests that do not hold (verify.py)
on the model as the rounds before left it: fresh target vectors there, and an update whose
preservation term holds the keys of every earlier round, as MEMIT-seq's does, so that the facts
that already hold stay held. The rounds stop when everything holds or after ``hp.rounds``.

The rounds come back as one Delta. With one round it is that round's, unchanged. With more, each
weight's change is the sum of the rounds' factors (lowrank.py), one factor pair of the summed
rank. After each later round the weights are set to original + that sum, computed once in
float64: float32 sums of the rounds' changes would not replay to the same bits, this does, and
the facts are verified on exactly the weights that a saved delta reproduces. A change made
without factors is stored as the float64 difference (final − original), which replays as well.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from memit import weights
from memit.delta import Delta
from memit.lowrank import LowRank
from memit.methods.sequential import key_outer_sums
from memit.progress import phase
from memit.requests import EditRequest
from memit.verify import check, failure_reason

# (requests, hparams, prior K_pK_pᵀ per layer or None, round) -> the applied Delta of that round
EditOnce = Callable[[list[EditRequest], object, dict | None, int], Delta]


def edit_in_rounds(model, tokenizer, requests: list[EditRequest], hp, once: EditOnce, *,
                   prior: dict[int, torch.Tensor] | None = None, reedit: bool = True) -> Delta:
    """Edit with ``once``, verify, re-edit what failed (when ``reedit``); the model is left edited.
    With ``hp.middle_check`` "edited", a round before the last checks only what it edited, and
    the check after the loop covers everything."""
    if hp.middle_check not in ("all", "edited"):
        raise ValueError(f"middle_check must be all or edited, not {hp.middle_check!r}")
    first = once(requests, hp, prior, 1)
    prefixes = first.meta["hparams"].get("prefixes") or []
    hp = dataclasses.replace(hp, prefixes=prefixes)  # later rounds: the same prompts, not new samples
    spent = {"verify": 0.0}
    everyone = list(range(len(requests)))

    def verify(which: list[int], status: list[dict], after: str = "") -> None:
        """Check the requests ``which`` on the model as it is now, into ``status``; timed."""
        t = time.perf_counter()
        phase(f"verifying {len(which)} facts{after}")
        for i, s in zip(which, check(model, tokenizer, [requests[i] for i in which], prefixes, hp.batch_tokens)):
            status[i] = s
        spent["verify"] += time.perf_counter() - t

    status: list[dict] = [{}] * len(requests)
    verify(everyone, status)
    last = {i: r for i, r in enumerate(first.meta["requests"])}  # each request's latest target vector
    held_in = {i: 1 for i, s in enumerate(status) if s["holds"]}
    deltas, rounds = [first], [_round_info(1, everyone, first, status, len(requests))]
    partial = False
    kk = dict(prior or {})
    while reedit and len(deltas) < hp.rounds and len(held_in) < len(requests):
        todo = [i for i, s in enumerate(status) if not s["holds"]]
        for layer, x in key_outer_sums(deltas[-1].aux.get("keys", {})).items():
            kk[layer] = kk[layer] + x if layer in kk else x
        d = once([requests[i] for i in todo], hp, kk, len(deltas) + 1)
        deltas.append(d)
        _settle(model, deltas)
        for j, i in enumerate(todo):
            last[i] = d.meta["requests"][j]
        partial = hp.middle_check == "edited" and len(deltas) < hp.rounds
        which = todo if partial else everyone
        verify(which, status, f" after round {len(deltas)}")
        _held_in(held_in, status, len(deltas))
        rounds.append(_round_info(len(deltas), todo, d, status, len(which)))
    if partial:  # the loop ended after a partial check: what is reported is checked on every request
        verify(everyone, status)
        _held_in(held_in, status, len(deltas))
        rounds[-1] |= {"held_after": sum(s["holds"] for s in status), "checked": len(requests)}
    margin = hp.stop_margin if hp.stop == "margin" else None
    for i, (r, s) in enumerate(zip(first.meta["requests"], status)):
        r.update(holds=s["holds"], held_prompts=s["held_prompts"], prompts=s["prompts"],
                 round=held_in.get(i), stop=last[i].get("stop"), margin=last[i].get("margin"),
                 steps_total=sum(x["requests"][i]["steps"] for x in rounds if i in x["requests"]),
                 reason=None if s["holds"] else failure_reason(tokenizer, requests, i, last[i], margin))
    return _combine(model, deltas, rounds, spent)


def _held_in(held_in: dict[int, int], status: list[dict], k: int) -> None:
    """Each holding request's first round of an unbroken run of holding, after round ``k``."""
    for i, s in enumerate(status):
        if s["holds"]:
            held_in.setdefault(i, k)
        else:
            held_in.pop(i, None)  # a later round broke it


def _round_info(k: int, todo: list[int], d: Delta, status: list[dict], checked: int) -> dict:
    return {"round": k, "n_edited": len(todo), "held_after": sum(s["holds"] for s in status), "checked": checked,
            "timings": d.meta["timings"], "layers_info": [dict(x) for x in d.meta["layers_info"]],  # as that round left them
            "requests": {i: {"steps": r["steps"], "stop": r.get("stop")} for i, r in zip(todo, d.meta["requests"])}}


def _summed(deltas: list[Delta]) -> dict[str, LowRank] | None:
    """Each weight's change over all rounds, as factors; None when a round has no factors."""
    names = deltas[0].weights
    if any(n not in d.factors for d in deltas for n in d.weights) or any(set(d.weights) - set(names) for d in deltas):
        return None
    return {n: LowRank.cat([d.factors[n] for d in deltas if n in d.factors]) for n in names}


def _settle(model, deltas: list[Delta]) -> None:
    """Weights = original + the summed factors, as ``Delta.apply`` of the combined delta writes them."""
    for name, f in (_summed(deltas) or {}).items():
        w0 = deltas[0].original(name)
        weights.write(model, name, (w0.float() + f.dense().to(w0.device)).to(w0.dtype))


def _combine(model, deltas: list[Delta], rounds: list[dict], spent: dict) -> Delta:
    first = deltas[0]
    meta = first.meta
    reqs = meta["requests"]
    meta["verification"] = {"held": sum(r["holds"] for r in reqs), "failed": sum(not r["holds"] for r in reqs),
                            "rounds_used": len(deltas)}
    meta["rounds"] = [{k: v for k, v in r.items() if k != "requests"} for r in rounds]
    timings = {}
    for d in deltas:
        for k, v in d.meta["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
    meta["timings"] = timings | spent
    meta["targets_from_cache"] = sum(d.meta.get("targets_from_cache") or 0 for d in deltas)
    if len(deltas) == 1:
        return first
    current = {n: weights.read(model, n).detach().clone() for n in first.weights}
    factors = _summed(deltas) or {}
    changes = {n: factors[n].dense() if n in factors else current[n].double() - first.original(n).double()
               for n in first.weights}
    for info, name in zip(meta["layers_info"], changes):  # the whole edit's change, not round 1's (one weight a layer)
        info["delta_rel_norm"] = float(changes[name].norm() / first.original(name).double().norm())
    keys = {layer: torch.cat([d.aux["keys"][layer] for d in deltas if layer in d.aux.get("keys", {})], dim=1)
            for layer in first.aux.get("keys", {})}
    return Delta.written(model, {n: first.original(n) for n in first.weights}, changes, meta, factors,
                         first.aux | {"keys": keys})
