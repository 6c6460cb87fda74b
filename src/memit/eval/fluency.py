"""Fluency as the paper measures it: the weighted n-gram entropy of sampled generations."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from memit.models.arch import get_arch, logits
from memit.tokens import pad
from memit.weights import input_device

_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """Mean over n of weight_n · entropy (bits) of the text's word n-gram frequencies."""
    words = _WORD.findall(text.lower())
    parts = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        parts.append(w * h)
    return sum(parts) / len(parts)


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str] | list[list[int]], max_new_tokens: int = 100, top_k: int = 5,
           seed: int = 0, batch_size: int = 64, desc: str | None = None,
           done: Callable[[list[int]], bool] | None = None) -> list[str]:
    """Top-k samples (seeded), a batch of left-padded prompts at a time, each continued with the key/
    value cache and logits only at the last position; a text ends at its first end-of-sequence token.
    A prompt is text, or token ids already encoded (a chat template's).

    ``done(new_ids)`` says that a text needs no more tokens (a generated answer already cut where a
    reader stops): that row leaves the batch and the cache, so that a batch costs what its longest
    unfinished answer costs. Only for greedy decoding (top_k = 1), where no row's choice depends
    on the random draws of the others.

    A plain loop rather than ``model.generate``, whose per-step bookkeeping is a large part of the
    cost for a small model on a CPU. With top_k = 1 it is greedy decoding of each prompt (tested).
    """
    if done is not None and top_k != 1:
        raise ValueError("done= is for greedy decoding (top_k=1)")
    arch = get_arch(model)
    device = input_device(model)
    gen = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id
    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc=desc or f"generating {len(prompts)} texts", leave=False,
                  disable=len(prompts) <= batch_size):
        enc = [p if isinstance(p, list) else tokenizer(p)["input_ids"] for p in prompts[i: i + batch_size]]
        batch = pad(enc, tokenizer.pad_token_id or 0, side="left").to(device)
        mask, pos = batch.attention_mask, batch.position_ids[:, -1:]
        o = model.base_model(**batch.model_inputs(), use_cache=True)
        cache, rows = o.past_key_values, list(range(len(enc)))  # rows: batch row -> text still growing
        new: list[list[int]] = [[] for _ in enc]
        for step in range(max_new_tokens):
            top = logits(model, arch, o[0][:, -1]).float().topk(top_k)
            pick = torch.multinomial(torch.softmax(top.values, -1).cpu(), 1, generator=gen).to(top.indices.device)
            tok = top.indices.gather(1, pick)
            for r, t in zip(rows, tok[:, 0].tolist()):
                new[r].append(t)
            if step == max_new_tokens - 1:
                break
            keep = [j for j, r in enumerate(rows) if not (done and (eos in new[r] or done(new[r])))]
            if not keep:
                break
            if len(keep) < len(rows):
                idx = torch.tensor(keep, device=tok.device)
                cache.reorder_cache(idx)
                rows, tok, mask, pos = [rows[j] for j in keep], tok[idx], mask[idx], pos[idx]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos + 1
            o = model.base_model(input_ids=tok.to(device), attention_mask=mask, position_ids=pos,
                                 past_key_values=cache, use_cache=True)
            cache = o.past_key_values
        for row in new:
            if eos is not None and eos in row:
                row = row[: row.index(eos)]
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out
