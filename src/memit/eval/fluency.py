"""Fluency as the paper measures it: the weighted n-gram entropy of sampled generations."""

from __future__ import annotations

import math
import re
from collections import Counter

import torch
from tqdm.auto import tqdm

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
def sample(model, tokenizer, prompts: list[str], max_new_tokens: int = 100, top_k: int = 5, seed: int = 0,
           batch_size: int = 32) -> list[str]:
    """Top-k samples, seeded, left-padded batches (the whole attention mask is passed)."""
    device = input_device(model)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc=f"generating {len(prompts)} texts", leave=False,
                      disable=len(prompts) <= batch_size):
            torch.manual_seed(seed + i)
            enc = tokenizer(prompts[i: i + batch_size], return_tensors="pt", padding=True).to(device)
            gen = model.generate(**enc, do_sample=True, top_k=top_k, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
    return out
