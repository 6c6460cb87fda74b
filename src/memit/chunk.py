"""A chunk of prompt rows, set up once so that each step of the target-vector loop is cheap.

Only positions from the subject's last token on, and only through δ, change during the
optimisation. So the rows are aligned on that token (left padding), the part before it is run
once and kept as a key/value cache, the rest runs once through the blocks up to the edited
layer, whose output is kept, and every step runs only the blocks above it; logits are computed
only at the positions the loss reads.
"""

from __future__ import annotations

import copy

import torch

from memit import hooks
from memit.models.arch import Arch, logits
from memit.tokens import Encoded
from memit.weights import input_device


class Chunk:
    """Prompts of some requests, aligned so the subject's last token is column ``p`` of every row,
    with the key/value cache of columns < p and the output of block ``layer`` at columns ≥ p. The
    δ enters at that block's output (with ``pre_norm``, at its MLP's output before the norm that
    follows it), so each optimisation step runs only the blocks above it."""

    def __init__(self, model, arch: Arch, layer: int, encs: list[Encoded], per_req: int, pad_id: int,
                 pre_norm: bool = False):
        device = input_device(model)
        self.per_req, self.arch, self.layer = per_req, arch, layer
        self.p = p = max(e.subject_last for e in encs)
        width = max(p - e.subject_last + len(e.ids) for e in encs)
        ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, e in enumerate(encs):
            off = p - e.subject_last
            ids[r, off: off + len(e.ids)] = torch.tensor(e.ids)
            mask[r, off: off + len(e.ids)] = 1
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
        # With a norm after the MLP, δ moves the MLP's output y before that norm (postnorm.py):
        # the MLP output at the subject's last token of every row, and the norm.
        self.y = seen[mlp][:, 0] if pre_norm else None
        self.norm = model.get_submodule(arch.post_mlp_norm_name(layer)) if pre_norm else None
        # Loss positions, in suffix columns: target predictions of rewriting rows, column 0 of KL rows.
        self.pos_r, self.pos_c, self.tgt, self.owner = [], [], [], []
        for r, e in enumerate(encs):
            if r % per_req == per_req - 1:
                continue
            shift = -e.subject_last  # token j sits at column j + p - subject_last, i.e. suffix column j + shift
            for q, t in zip(e.target_positions, e.ids[e.n_prompt:]):
                self.pos_r.append(r), self.pos_c.append(q + shift), self.tgt.append(t), self.owner.append(r // per_req)

    def _cache(self, rows: torch.Tensor):
        """The prefix cache for ``rows``: a copy, since a forward pass appends to it."""
        if self.cache is None:
            return None
        cache = copy.copy(self.cache)  # shallow: each pass appends to its own copy of the layer list
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        for layer in cache.layers:
            r = rows.to(layer.keys.device)  # each layer's cache lives with its layer
            layer.keys, layer.values = layer.keys[r], layer.values[r]
        return cache

    def forward(self, model, arch: Arch, live: list[int], add) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs at the loss positions and at the KL rows, for the requests ``live``
        (indices within the chunk), with ``add(out_at_subject, row_request, y)`` applied at block l_L
        (``y``: the rows' MLP outputs before the norm, or None)."""
        device = self.ids.device
        rows = torch.tensor([j * self.per_req + k for j in live for k in range(self.per_req)], device=device)
        row_req = torch.arange(len(live), device=device).repeat_interleave(self.per_req)
        cache = self._cache(rows)

        def edit(out):
            at = torch.arange(len(rows), device=out.device)
            y = None if self.y is None else self.y[rows.to(self.y.device)].to(out.device)
            return out.index_put((at, torch.zeros_like(at)), add(out[:, 0], row_req, y))

        with hooks.skip_blocks(model, self.arch.blocks, self.layer, self.known, rows), \
                hooks.edit_output(model, self.arch.block_name(self.layer), edit):
            hidden = model.base_model(input_ids=self.ids[rows], attention_mask=self.mask[rows],
                                      position_ids=self.pos[rows], past_key_values=cache, use_cache=cache is not None)[0]
        where = {int(r): i for i, r in enumerate(rows.tolist())}
        keep = [i for i, r in enumerate(self.pos_r) if r in where]
        sel_r = [where[self.pos_r[i]] for i in keep]
        sel_c = [self.pos_c[i] for i in keep]
        lp = torch.log_softmax(logits(model, arch, hidden[sel_r, sel_c]).float(), -1).to(device)
        tgt = torch.tensor([self.tgt[i] for i in keep], device=device)
        tok_nll = -lp[torch.arange(len(keep), device=device), tgt]
        with torch.no_grad():  # margin of each target token over the best other token
            top = lp.topk(2, dim=-1)
            other = torch.where(top.indices[:, 0] == tgt, top.values[:, 1], top.values[:, 0])
            tok_margin = -tok_nll.detach() - other
        live_pos = {j: n for n, j in enumerate(live)}
        owner = torch.tensor([live_pos[self.owner[i]] for i in keep], device=device)
        nll = torch.zeros(len(live), device=device).index_add(0, owner, tok_nll)
        nll = nll / torch.bincount(owner, minlength=len(live)).float()
        margin = torch.full((len(live),), float("inf"), device=device).scatter_reduce(0, owner, tok_margin, "amin")
        kl_rows = list(range(self.per_req - 1, len(rows), self.per_req))
        kl_lp = torch.log_softmax(logits(model, arch, hidden[kl_rows, 0]).float(), -1).to(device)
        return nll, kl_lp, margin
