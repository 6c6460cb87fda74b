"""Does each requested fact hold on the edited model? Checked on the prompts the edit was made
from: the rewrite prompt alone and behind each context prefix.

A fact holds on a prompt when target_new is more likely than target_true (mean NLL per token,
as CounterFact's efficacy score compares them) or, for a request without target_true, when
every target token is the greedy top-1 continuation. It holds when it holds on all its prompts:
an edit that carries only the bare prompt is one that paraphrases and chat prompts will miss.
"""

from __future__ import annotations

from memit.eval.metrics import target_scores
from memit.requests import EditRequest
from memit.tokens import encode_filled


def check(model, tokenizer, requests: list[EditRequest], prefixes: list[str], batch_tokens: int = 4096
          ) -> list[dict]:
    """Per request: ``holds`` (on every prompt), ``held_prompts`` of ``prompts``, and whether it
    holds on the bare rewrite prompt (``rewrite``)."""
    pairs, owner = [], []
    for i, r in enumerate(requests):
        for p in ["", *prefixes]:
            text = p + r.text
            pairs.append((text, r.target_new))
            if r.target_true is not None:
                pairs.append((text, r.target_true))
            owner.append(i)
    scores = iter(target_scores(model, tokenizer, pairs, batch_tokens))
    held: list[list[bool]] = [[] for _ in requests]
    for i in owner:
        nll_new, hits = next(scores)
        if requests[i].target_true is not None:
            held[i].append(nll_new < next(scores)[0])
        else:
            held[i].append(all(hits))
    return [{"holds": all(h), "rewrite": h[0], "held_prompts": sum(h), "prompts": len(h)} for h in held]


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
