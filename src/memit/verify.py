"""Does each requested fact hold on the edited model? Checked on the prompts the edit was made
from: the rewrite prompt alone and behind each context prefix.

A fact holds on a prompt when target_new is more likely than target_true (mean NLL per token,
as CounterFact's efficacy score compares them) or, for a request without target_true, when
every target token is the greedy top-1 continuation. It holds when it holds on all its prompts:
an edit that carries only the bare prompt is one that paraphrases and chat prompts will miss.
"""

from __future__ import annotations

import torch

from memit.chunk import cache_rows
from memit.eval.metrics import target_scores
from memit.models.arch import get_arch, logits
from memit.requests import EditRequest
from memit.tokens import chunks, encode, encode_filled, pad
from memit.weights import input_device


def check(model, tokenizer, requests: list[EditRequest], prefixes: list[str], batch_tokens: int = 4096
          ) -> list[dict]:
    """Per request: ``holds`` (on every prompt), ``held_prompts`` of ``prompts``, and whether it
    holds on the bare rewrite prompt (``rewrite``)."""
    held: list[list[bool]] = [[] for _ in requests]
    for p in ["", *prefixes]:  # one prefix at a time: behind a prefix, every row starts with its tokens
        pairs, owner = [], []
        for i, r in enumerate(requests):
            pairs.append((p + r.text, r.target_new))
            if r.target_true is not None:
                pairs.append((p + r.text, r.target_true))
            owner.append(i)
        scores = iter(scores_behind(model, tokenizer, pairs, batch_tokens) if p else
                      target_scores(model, tokenizer, pairs, batch_tokens))
        for i in owner:
            nll_new, hits = next(scores)
            if requests[i].target_true is not None:
                held[i].append(nll_new < next(scores)[0])
            else:
                held[i].append(all(hits))
    return [{"holds": all(h), "rewrite": h[0], "held_prompts": sum(h), "prompts": len(h)} for h in held]


@torch.no_grad()
def scores_behind(model, tokenizer, pairs: list[tuple[str, str]], batch_tokens: int = 4096
                  ) -> list[tuple[float, list[bool]]]:
    """``target_scores`` for pairs whose prompts all start with one context prefix. The leading
    tokens every row shares (up to the first position whose logits are read) run once, as a
    key/value cache; each row runs only the rest. Behind a prefix of ten tokens that is about half
    of every row. As in ``target_scores``, a one-token target is read from the row of another
    pair with the same prompt tokens (that grouping is written twice on purpose: the source of
    eval/metrics.py is part of the key of every cached and seeded unedited score)."""
    encs = [encode(tokenizer, p, t, where=f"prompt {p!r}") for p, t in pairs]
    stem = encs[0].ids
    m = min(e.n_prompt - 1 for e in encs)
    for e in encs[1:]:
        k = 0
        while k < m and e.ids[k] == stem[k]:
            k += 1
        m = k
    if m == 0:
        return target_scores(model, tokenizer, pairs, batch_tokens)
    device = input_device(model)
    cache = model.base_model(input_ids=torch.tensor([stem[:m]], device=device), use_cache=True).past_key_values
    hosts: dict[int, list[int]] = {}  # row (index of the pair whose tokens it runs) -> pairs read from it
    first: dict[tuple[int, ...], int] = {}
    for i, e in enumerate(encs):
        key = tuple(e.ids[: e.n_prompt])
        if len(e.ids) - e.n_prompt == 1 and key in first:
            hosts[first[key]].append(i)
        else:
            first.setdefault(key, i)
            hosts[i] = [i]
    order = sorted(hosts, key=lambda i: len(encs[i].ids))
    arch, out = get_arch(model), [None] * len(encs)
    for rng in chunks([len(encs[i].ids) - m for i in order], batch_tokens):
        rows = order[rng.start: rng.stop]
        batch = pad([encs[i].ids[m:] for i in rows], tokenizer.pad_token_id or 0).to(device)
        mask = torch.cat([torch.ones(len(rows), m, dtype=batch.attention_mask.dtype, device=device),
                          batch.attention_mask], 1)
        hidden = model.base_model(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids + m,
                                  past_key_values=cache_rows(cache, torch.zeros(len(rows), dtype=torch.long)),
                                  use_cache=True)[0]
        at = [(r, q - m, t, i) for r, h in enumerate(rows) for i in hosts[h]
              for q, t in zip(encs[i].target_positions, encs[i].ids[encs[i].n_prompt:])]
        logp = torch.log_softmax(logits(model, arch, hidden[[a[0] for a in at], [a[1] for a in at]]).float(), -1)
        tgt = torch.tensor([a[2] for a in at], device=logp.device)
        nll, hit = (-logp[torch.arange(len(at)), tgt]).tolist(), (logp.argmax(-1) == tgt).tolist()
        per: dict[int, tuple[list[float], list[bool]]] = {}
        for (_, _, _, i), x, y in zip(at, nll, hit):
            a, b = per.setdefault(i, ([], []))
            a.append(x), b.append(y)
        for i, (a, b) in per.items():
            out[i] = (sum(a) / len(a), b)
    return out  # type: ignore[return-value]


def failure_reason(tokenizer, requests: list[EditRequest], i: int, target: dict, stop_margin: float | None) -> str:
    """Why request ``i`` may not hold, from what is visible: another request on its subject, a
    target that tokenizes into other text, or a target vector that stopped short (``target`` holds
    its ``stop``, ``margin`` and ``loss`` from the last round that edited it)."""
    r = requests[i]
    for j, other in enumerate(requests):
        if j != i and other.subject == r.subject:
            same = "subject and prompt" if other.prompt == r.prompt else "subject"
            return f"shares its {same} with request {j} ({other.target_new!r})"
    enc = encode_filled(tokenizer, r.prompt, r.subject, r.target_new)
    said = tokenizer.decode(enc.ids[enc.n_prompt:]).strip()
    if said != r.target_new.strip():
        return f"target {r.target_new!r} tokenizes as {said!r}"
    stop, margin = target.get("stop"), target.get("margin")
    if stop is None:  # a method without target vectors (fine-tuning)
        return "the update did not make it hold"
    if stop_margin is not None and stop != "margin":
        at = f" at margin {margin:.2f}" if margin is not None else ""
        return f"its target vector stopped by {stop}{at}, short of {stop_margin:g}"
    if stop_margin is None and stop == "cap":
        return f"its target vector ran to the step cap (loss {target.get('loss', float('nan')):.2f})"
    return "its target vector held, but the update at the edited layers did not carry it"
