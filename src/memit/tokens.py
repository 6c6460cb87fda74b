"""Tokenisation that knows where the subject ends and where the target starts.

Both are found from the tokenizer's character offsets on the whole text, never by tokenising
pieces separately, so the answer is right for byte-level BPE and SentencePiece alike, with or
without a BOS token, and whatever the tokenizer does with the space before the target.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


class TokenizationError(ValueError):
    pass


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    subject_last: int  # index of the token holding the subject's last character, or -1
    n_prompt: int  # tokens before the target; the target occupies ids[n_prompt:]

    @property
    def target_positions(self) -> list[int]:
        """Positions whose next-token logits predict the target tokens (teacher forcing)."""
        return list(range(self.n_prompt - 1, len(self.ids) - 1))


def join_target(prompt: str, target: str) -> str:
    """The prompt followed by the target as a continuation after one space."""
    return prompt + ("" if prompt.endswith(" ") else " ") + target.strip()


def encode(tokenizer, prompt: str, target: str | None = None,
           subject_span: tuple[int, int] | None = None, where: str = "prompt") -> Encoded:
    """Token ids of ``prompt`` (+ target), with the subject's last token and the prompt length."""
    text = join_target(prompt, target) if target else prompt
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    real = [(i, s, e) for i, (s, e) in enumerate(offsets) if e > s]  # skips BOS/EOS (0, 0)
    subject_last = -1
    if subject_span is not None:
        s_end = subject_span[1]
        inside = [i for i, s, e in real if s < s_end]
        if not inside or offsets[inside[-1]][1] <= subject_span[0]:
            raise TokenizationError(f"{where}: subject lost in tokenization of {text!r}")
        subject_last = inside[-1]
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        overlap = [ids[i] for i, (s, e) in enumerate(offsets) if s < s_end and e > subject_span[0]]
        if any(t in special for t in overlap):
            raise TokenizationError(f"{where}: subject lost in tokenization: it is read as a special token in {text!r}")
    if not real:
        raise TokenizationError(f"{where}: {text!r} produced no tokens")
    ids = ids[: real[-1][0] + 1]  # drop a trailing EOS the tokenizer may append
    if target:
        cut = len(prompt.rstrip())
        first_target = next((i for i, s, e in real if e > cut), None)
        if first_target is None:
            raise TokenizationError(f"{where}: target {target!r} produced no tokens")
        n_prompt = first_target
        if n_prompt == 0:
            raise TokenizationError(f"{where}: nothing before the target to predict it from")
    else:
        n_prompt = len(ids)
    if subject_last >= n_prompt:
        raise TokenizationError(f"{where}: the subject's last token overlaps the target in {text!r}")
    return Encoded(ids, subject_last, n_prompt)


def encode_filled(tokenizer, template: str, subject: str, target: str | None = None,
                  prefix: str = "", where: str = "prompt") -> Encoded:
    """Encode ``prefix + template.format(subject)`` knowing exactly where the subject is."""
    start = len(prefix) + template.index("{}")
    text = prefix + template.replace("{}", subject, 1)
    return encode(tokenizer, text, target, (start, start + len(subject)), where)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    shift: list[int]  # left padding of each row: token j of row r sits at column j + shift[r]

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids}

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.position_ids.to(device), self.shift)


def pad(seqs: list[list[int]], pad_id: int, side: str = "right") -> Batch:
    """Pad to one length; positions count real tokens only, so left padding changes nothing."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', not {side!r}")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    shift = []
    for r, s in enumerate(seqs):
        off = width - len(s) if side == "left" else 0
        ids[r, off: off + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, off: off + len(s)] = 1
        shift.append(off)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return Batch(ids, mask, pos, shift)


def chunks(lengths: list[int], max_tokens: int, group: int = 1) -> Iterator[range]:
    """Consecutive index ranges whose padded size (rows × longest) stays within ``max_tokens``.

    ``group`` keeps rows together in multiples (all prompts of one request in one chunk).
    """
    start, n = 0, len(lengths)
    while start < n:
        end, longest = start, 0
        while end < n:
            nxt = min(end + group, n)
            longest_next = max([longest, *lengths[end:nxt]])
            if end > start and longest_next * (nxt - start) > max_tokens:
                break
            end, longest = nxt, longest_next
        yield range(start, end)
        start = end
