"""A chunk of prompt rows, set up once so that each step of the target-vector loop is cheap.

Only positions from the subject's last token on, and only through δ, change during the
optimisation. So the rows are aligned on that token (left padding), the part before it is run
once and kept as a key/value cache, the rest runs once through the blocks up to the edited
layer, whose output is kept, and every step runs only the blocks above it; logits are computed
only at the positions the loss reads.

Each row also stops at the last column its loss reads. A rewriting row's last token (the
target's last) predicts nothing the loss uses, and a KL row is read only at the subject's last
token, so when a chunk holds many requests the KL rows run as a pass of their own, one column
wide, instead of being padded to the width of the rewriting rows. Attention is causal, so what
is cut off changes nothing before it.
"""

from __future__ import annotations

import copy

import torch

from memit import hooks
from memit.models.arch import Arch, logits
from memit.tokens import Encoded
from memit.weights import input_device

# KL columns a one-column pass of their own must save before it pays its fixed cost (a pass of
# the blocks above costs about as much as some tens of token columns on a CPU; with one request,
# ROME's case, a second pass made each step slower).
SEPARATE_KL_TOKENS = 64


def cache_rows(cache, rows: torch.Tensor):
    """The key/value cache of batch rows ``rows`` (repeats allowed): a copy, since a forward pass
    appends to the cache it is given."""
    out = copy.copy(cache)  # shallow: each pass appends to its own copy of the layer list
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        r = rows.to(layer.keys.device)  # each layer's cache lives with its layer
        layer.keys, layer.values = layer.keys[r], layer.values[r]
    return out


class _Rows:
    """Rows aligned so that the subject's last token is column ``p`` of every row, row ``r`` cut
    after ``p + keep[r]`` columns, with the key/value cache of columns < p and the output of block
    ``layer`` at columns ≥ p (with ``pre_norm``, also its MLP's output at column p)."""

    def __init__(self, model, arch: Arch, layer: int, encs: list[Encoded], keep: list[int], owner: list[int],
                 pad_id: int, pre_norm: bool):
        device = input_device(model)
        self.owner = owner  # the request (index within the chunk) of each row
        self.p = p = max(e.subject_last for e in encs)
        ids = torch.full((len(encs), p + max(keep)), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (e, k) in enumerate(zip(encs, keep)):
            off, used = p - e.subject_last, e.subject_last + k
            ids[r, off: off + used] = torch.tensor(e.ids[:used])
            mask[r, off: off + used] = 1
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        self.ids, self.mask, self.pos = ids[:, p:].to(device), mask.to(device), pos[:, p:].to(device)
        self.cache = None
        if p > 0:
            out = model.base_model(input_ids=ids[:, :p].to(device), attention_mask=self.mask[:, :p],
                                   position_ids=pos[:, :p].to(device), use_cache=True)
            self.cache = out.past_key_values
        block, mlp = arch.block_name(layer), arch.mlp_out_name(layer)
        with hooks.record(model, [mlp, block] if pre_norm else [block], stop=True, whole=True) as seen:
            hooks.run(model.base_model, input_ids=self.ids, attention_mask=self.mask, position_ids=self.pos,
                      past_key_values=self._cache(torch.arange(len(encs), device=device)),
                      use_cache=self.cache is not None)
        self.known = seen[block]
        self.y = seen[mlp][:, 0] if pre_norm else None

    def at_subject(self) -> torch.Tensor:
        """Block ``layer``'s output at the subject's last token of every row, before any δ."""
        known = self.known[0] if isinstance(self.known, tuple) else self.known
        return known[:, 0]

    def _cache(self, rows: torch.Tensor):
        return None if self.cache is None else cache_rows(self.cache, rows)

    def run(self, model, arch: Arch, layer: int, live: list[int], add) -> tuple[list[int], torch.Tensor]:
        """The rows of the requests ``live`` and the last hidden states of their suffix columns,
        with ``add`` applied at block ``layer`` (see ``Chunk.forward``)."""
        device = self.ids.device
        live_pos = {j: n for n, j in enumerate(live)}
        picked = [r for r, j in enumerate(self.owner) if j in live_pos]
        rows = torch.tensor(picked, device=device)
        row_req = torch.tensor([live_pos[self.owner[r]] for r in picked], device=device)
        cache = self._cache(rows)

        def edit(out):
            at = torch.arange(len(rows), device=out.device)
            y = None if self.y is None else self.y[rows.to(self.y.device)].to(out.device)
            return out.index_put((at, torch.zeros_like(at)), add(out[:, 0], row_req, y))

        with hooks.skip_blocks(model, arch.blocks, layer, self.known, rows), \
                hooks.edit_output(model, arch.block_name(layer), edit):
            hidden = model.base_model(input_ids=self.ids[rows], attention_mask=self.mask[rows],
                                      position_ids=self.pos[rows], past_key_values=cache, use_cache=cache is not None)[0]
        return picked, hidden


class Chunk:
    """Prompts of some requests (``per_req`` rows each: rewriting rows, the bare prompt first, then
    the KL row), run as one or two sets of ``_Rows``. The δ enters at block ``layer``'s output
    (with ``pre_norm``, at its MLP's output before the norm that follows it), so each
    optimisation step runs only the blocks above it."""

    def __init__(self, model, arch: Arch, layer: int, encs: list[Encoded], per_req: int, pad_id: int,
                 pre_norm: bool = False):
        self.layer = layer
        kl = set(range(per_req - 1, len(encs), per_req))
        # a rewriting row up to the prediction of its target's last token; a KL row, its subject's last token
        need = [1 if r in kl else len(e.ids) - 1 - e.subject_last for r, e in enumerate(encs)]
        width = max(n for r, n in enumerate(need) if r not in kl)
        rw = [r for r in range(len(encs)) if r not in kl]
        # a pass of its own costs a pass's fixed overhead: worth it only when it saves many padded columns
        passes = [rw, sorted(kl)] if len(kl) * (width - 1) >= SEPARATE_KL_TOKENS else [list(range(len(encs)))]
        self.parts = [_Rows(model, arch, layer, [encs[r] for r in rows], [need[r] for r in rows],
                            [r // per_req for r in rows], pad_id, pre_norm) for rows in passes]
        at = {r: (k, i) for k, rows in enumerate(passes) for i, r in enumerate(rows)}
        self.ids = self.parts[0].ids
        # Each request's bare prompt (its first row): block l_L's output h there before any δ and,
        # with a norm after the MLP (δ then moves the MLP's output y before that norm, postnorm.py), y.
        bare = [at[r] for r in range(0, len(encs), per_req)]
        self.h = torch.stack([self.parts[k].at_subject()[i] for k, i in bare])
        self.y = torch.stack([self.parts[k].y[i] for k, i in bare]) if pre_norm else None
        self.norm = model.get_submodule(arch.post_mlp_norm_name(layer)) if pre_norm else None
        # Per part: loss positions (row, suffix column, target token) of the rewriting rows, and its KL rows.
        self.loss: list[tuple[list[int], list[int], list[int]]] = [([], [], []) for _ in passes]
        self.kl_rows: list[list[int]] = [[at[r][1] for r in rows if r in kl] for rows in passes]
        for r in rw:
            e, (k, i) = encs[r], at[r]
            for q, t in zip(e.target_positions, e.ids[e.n_prompt:]):
                rows, cols, tgt = self.loss[k]
                rows.append(i), cols.append(q - e.subject_last), tgt.append(t)  # token q sits at suffix column q - subject_last

    def forward(self, model, arch: Arch, live: list[int], add) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean target NLL per request, log-probs at the KL rows and the smallest target margin per
        request, for the requests ``live`` (indices within the chunk), with
        ``add(out_at_subject, row_request, y)`` applied at block l_L (``y``: the rows' MLP outputs
        before the norm, or None)."""
        device = self.ids.device
        live_pos = {j: n for n, j in enumerate(live)}
        states, tgt, owner, kl_states = [], [], [], []
        for part, (rows, cols, tokens), kl_rows in zip(self.parts, self.loss, self.kl_rows):
            picked, hidden = part.run(model, arch, self.layer, live, add)
            where = {r: n for n, r in enumerate(picked)}
            keep = [n for n, r in enumerate(rows) if r in where]
            states.append(hidden[[where[rows[n]] for n in keep], [cols[n] for n in keep]])
            tgt += [tokens[n] for n in keep]
            owner += [live_pos[part.owner[rows[n]]] for n in keep]
            kl_states.append(hidden[[where[r] for r in kl_rows if r in where], 0])  # request order, as ``live``
        lp = torch.log_softmax(logits(model, arch, torch.cat(states)).float(), -1).to(device)
        tgt_t = torch.tensor(tgt, device=device)
        tok_nll = -lp[torch.arange(len(tgt), device=device), tgt_t]
        with torch.no_grad():  # margin of each target token over the best other token
            top = lp.topk(2, dim=-1)
            other = torch.where(top.indices[:, 0] == tgt_t, top.values[:, 1], top.values[:, 0])
            tok_margin = -tok_nll.detach() - other
        owner_t = torch.tensor(owner, device=device)
        nll = torch.zeros(len(live), device=device).index_add(0, owner_t, tok_nll)
        nll = nll / torch.bincount(owner_t, minlength=len(live)).float()
        margin = torch.full((len(live),), float("inf"), device=device).scatter_reduce(0, owner_t, tok_margin, "amin")
        kl_lp = torch.log_softmax(logits(model, arch, torch.cat(kl_states)).float(), -1).to(device)
        return nll, kl_lp, margin
