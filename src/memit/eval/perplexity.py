"""Perplexity on held-out text (wikitext-2 test): the general-ability check after many edits."""

from __future__ import annotations

import math

import torch

from memit.corpus import token_windows
from memit.models.arch import get_arch, logits
from memit.weights import input_device


@torch.no_grad()
def perplexity(model, tokenizer, corpus: str | None, max_tokens: int = 20_000, seq_len: int = 512,
               batch_rows: int = 4) -> float:
    """exp(mean NLL of each next token) over consecutive windows of the corpus (the same windows
    every time, so values before and after an edit compare); the first token of a window is not scored."""
    seq_len = min(seq_len, max_tokens, getattr(model.config, "max_position_embeddings", None) or seq_len)
    windows = token_windows(tokenizer, corpus, seq_len, max_tokens)
    arch = get_arch(model)
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_rows):
        ids = windows[i: i + batch_rows].to(input_device(model))
        hidden = model.base_model(input_ids=ids)[0]
        lp = torch.log_softmax(logits(model, arch, hidden[:, :-1]).float(), -1)
        nll = -lp.gather(-1, ids[:, 1:, None].to(lp.device)).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    return math.exp(total / count)
