"""Keys and current outputs at each request's last subject token: what MEMIT's solve is made of.

A key is the input of a layer's MLP output projection at the subject's last token, averaged over
the context prefixes (docs/algorithm.md §2.2). The current output is what block z_layer gives
there now, on the bare prompt; the target vector minus it is the residual the edit must write.

MEMIT asks for both at each edited layer in turn, on the model with the layers below already
edited. ``Walk`` carries the prompts up the band instead of running them from the embedding
each time: an edit at layer l changes nothing below block l, so every pass starts from the
output of a block below, kept from the pass before.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext

import torch

from memit import hooks
from memit.models.arch import Arch
from memit.requests import EditRequest
from memit.tokens import chunks, encode_filled, pad
from memit.weights import input_device


def compute_keys(model, tokenizer, arch: Arch, requests: list[EditRequest], layer: int, z_layer: int,
                 prefixes: list[str], batch_tokens: int, padding_side: str = "right"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys at ``layer`` averaged over the prefixed prompts (d_ff, n), and the current output of
    block ``z_layer`` at the subject's last token of the bare prompt (n, d_model): one layer's
    step of a ``Walk``, from the embedding.

    When ``z_layer`` is above ``layer``, two passes: the many prefixed prompts run only up to
    ``layer``'s MLP, and the bare prompts alone go on to block ``z_layer``. Otherwise (ROME) one
    pass gives both."""
    return Walk(model, tokenizer, arch, requests, z_layer, prefixes, batch_tokens, padding_side).at(model, layer)


class _Rows:
    """Prompts in padded batches, each batch with the whole output of one block (``self.below``)
    kept from its last pass, on the CPU, so that a long edit on a GPU does not hold it there."""

    def __init__(self, model, tokenizer, encs: list, batch_tokens: int, padding_side: str, group: int):
        self.parts = []
        for rng in chunks([len(e.ids) for e in encs], batch_tokens, group=group):
            part = encs[rng.start: rng.stop]
            batch = pad([e.ids for e in part], tokenizer.pad_token_id or 0, padding_side)
            self.parts.append({"batch": batch, "cols": [e.subject_last + s for e, s in zip(part, batch.shift)],
                               "kept": None, "on": None})
        self.below = -1  # no block's output kept yet: a pass starts at the embedding

    @torch.no_grad()
    def run(self, model, arch: Arch, points: list[tuple[str, str]], keep: int) -> list[torch.Tensor]:
        """Each of ``points`` (module name, "input" | "output", in the order the forward pass
        reaches them) at each row's last subject token, from the kept output on; block ``keep``'s
        whole output is kept in its place on the way (``keep`` ≥ the kept block, and below every
        block changed since that one was kept)."""
        device = input_device(model)
        out: list[list[torch.Tensor]] = [[] for _ in points]
        for part in self.parts:
            batch = part["batch"].to(device)
            rows = list(range(len(part["cols"])))
            skip = (hooks.skip_blocks(model, arch.blocks, self.below, _moved(part["kept"], part["on"]))
                    if self.below >= 0 else nullcontext())
            with skip, ExitStack() as stack:
                kept = (stack.enter_context(hooks.record(model, [arch.block_name(keep)], whole=True))
                        if keep > self.below else None)
                seen = [stack.enter_context(hooks.record(model, [name], what=what, stop=i == len(points) - 1))
                        for i, (name, what) in enumerate(points)]
                hooks.run(model.base_model, **batch.model_inputs())
            if kept is not None:
                x = kept[arch.block_name(keep)]
                part["on"] = (x[0] if isinstance(x, tuple) else x).device  # where the block after it reads it
                part["kept"] = _moved(x, torch.device("cpu"))
            for acc, got, (name, _) in zip(out, seen, points):
                acc.append(got[name][rows, part["cols"]].float().cpu())
        self.below = max(self.below, keep)
        return [torch.cat(acc) for acc in out]


def _moved(x, device: torch.device):
    """A block's whole output (a Tensor, or a tuple whose Tensors move) on ``device``."""
    if isinstance(x, tuple):
        return tuple(_moved(t, device) for t in x)
    return x.to(device) if isinstance(x, torch.Tensor) else x


class Walk:
    """Keys and current outputs of an edit's requests at each edited layer, asked for bottom-up.

    ``at(layer)`` gives what ``compute_keys`` gives on the model as it is then, bit for bit: each
    batch runs the same rows through the same blocks, only the blocks below the one kept are not
    run again. The model may change between calls only at or above the last layer asked for (an
    edit going up its band does). Per layer, the prefixed prompts run two blocks where a pass from
    the embedding runs layer + 1, and the bare prompts run from block layer − 1 to z_layer.
    """

    def __init__(self, model, tokenizer, arch: Arch, requests: list[EditRequest], z_layer: int,
                 prefixes: list[str], batch_tokens: int, padding_side: str = "right"):
        self.arch, self.z_layer, self.per = arch, z_layer, 1 + len(prefixes)
        prompts = [encode_filled(tokenizer, r.prompt, r.subject, prefix=p) for r in requests for p in ["", *prefixes]]
        bare = [encode_filled(tokenizer, r.prompt, r.subject) for r in requests]
        self.prompts = _Rows(model, tokenizer, prompts, batch_tokens, padding_side, self.per)
        self.bare = _Rows(model, tokenizer, bare, batch_tokens, padding_side, 1)
        self.last = -1

    def at(self, model, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys at ``layer`` averaged over the prefixed prompts (d_ff, n), and block z_layer's
        output at the bare prompts (n, d_model)."""
        if layer < self.last:
            raise ValueError(f"layer {layer} asked for after layer {self.last}: a walk goes up its band")
        self.last = layer
        key_point, z_point = (self.arch.mlp_out_name(layer), "input"), (self.arch.block_name(self.z_layer), "output")
        if layer == self.z_layer:  # the last layer (or ROME's one): one pass gives both, as in compute_keys
            keys, cur = self.prompts.run(model, self.arch, [key_point, z_point], layer - 1)
            cur = cur[:: self.per]
        else:
            keys, = self.prompts.run(model, self.arch, [key_point], layer - 1)
            cur = self.current(model, layer)
        return keys.view(-1, self.per, keys.shape[-1]).mean(1).T, cur

    def current(self, model, layer: int | None = None) -> torch.Tensor:
        """Block z_layer's output at the bare prompts, on the model with the layers below ``layer``
        final (None: every layer, after the last write)."""
        keep = min(self.last if layer is None else layer, self.z_layer) - 1
        return self.bare.run(model, self.arch, [(self.arch.block_name(self.z_layer), "output")], keep)[0]
