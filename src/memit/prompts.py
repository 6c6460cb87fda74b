"""The prompt rows a fact's target vector is optimised on: the rewrite prompt bare and behind each
context prefix (so the edit holds in context, not only at the start of a text), and a KL prompt
that keeps the subject's other properties where they were (docs/algorithm.md §2.1)."""

from __future__ import annotations

import torch

from memit.requests import EditRequest, where_of
from memit.tokens import Encoded, encode_filled
from memit.weights import input_device

KL_PROMPT = "{} is a"


@torch.no_grad()
def generate_prefixes(model, tokenizer, starts: list[str], n_tokens: int, seed: int, top_k: int = 5) -> list[str]:
    """Short context prefixes sampled from the model (top-k, seeded): the paper's recipe,
    made deterministic. Each ends in ". " so the prompt starts a new sentence."""
    gen = torch.Generator().manual_seed(seed)
    device = input_device(model)
    out = []
    for start in starts:
        ids = tokenizer(start, add_special_tokens=True)["input_ids"]
        n_start = len(ids)
        while len(ids) < n_start - 1 + n_tokens:
            logit = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float().cpu()
            top = logit.topk(top_k)
            ids.append(int(top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)]))
        text = tokenizer.decode(ids, skip_special_tokens=True)
        out.append(text.replace("{", " ").replace("}", " ").strip() + ". ")
    return out


def request_rows(tokenizer, requests: list[EditRequest], prefixes: list[str]) -> list[list[Encoded]]:
    """For each request: its prompt behind each prefix ("" first) with the target, then the KL prompt."""
    rows = []
    for i, r in enumerate(requests):
        where = where_of(i, r.case_id, "request")
        enc = [encode_filled(tokenizer, r.prompt, r.subject, r.target_new, prefix=p, where=where)
               for p in ["", *prefixes]]
        enc.append(encode_filled(tokenizer, KL_PROMPT, r.subject, where=where))
        rows.append(enc)
    return rows
