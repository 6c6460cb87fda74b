"""Keys and current outputs at each request's last subject token: what MEMIT's solve is made of.

A key is the input of a layer's MLP output projection at the subject's last token, averaged over
the context prefixes (docs/algorithm.md §2.2). The current output is what block z_layer gives
there now, on the bare prompt; the target vector minus it is the residual the edit must write.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch

from memit import hooks
from memit.models.arch import Arch
from memit.requests import EditRequest
from memit.tokens import chunks, encode_filled, pad
from memit.weights import input_device


@torch.no_grad()
def _at_subject_last(model, tokenizer, encs: list, points: list[tuple[str, str]], batch_tokens: int,
                     padding_side: str, group: int = 1) -> list[torch.Tensor]:
    """For each (module name, "input" | "output") in ``points``, that tensor at each prompt's last
    subject token (rows, width). The forward pass stops right after the last point's module, so
    nothing above it is computed; ``points`` go in the order the forward pass reaches them."""
    device = input_device(model)
    out: list[list[torch.Tensor]] = [[] for _ in points]
    for rng in chunks([len(e.ids) for e in encs], batch_tokens, group=group):
        part = encs[rng.start: rng.stop]
        batch = pad([e.ids for e in part], tokenizer.pad_token_id or 0, padding_side).to(device)
        rows = list(range(len(part)))  # plain lists index a tensor on whichever device its layer is
        cols = [e.subject_last + s for e, s in zip(part, batch.shift)]
        with ExitStack() as stack:
            seen = [stack.enter_context(hooks.record(model, [name], what=what, stop=i == len(points) - 1))
                    for i, (name, what) in enumerate(points)]
            hooks.run(model.base_model, **batch.model_inputs())
        for acc, got, (name, _) in zip(out, seen, points):
            acc.append(got[name][rows, cols].float().cpu())
    return [torch.cat(acc) for acc in out]


def current_outputs(model, tokenizer, arch: Arch, requests: list[EditRequest], z_layer: int, batch_tokens: int,
                    padding_side: str = "right") -> torch.Tensor:
    """The output of block ``z_layer`` at the subject's last token of each bare prompt (n, d_model)."""
    encs = [encode_filled(tokenizer, r.prompt, r.subject) for r in requests]
    return _at_subject_last(model, tokenizer, encs, [(arch.block_name(z_layer), "output")], batch_tokens,
                            padding_side)[0]


def compute_keys(model, tokenizer, arch: Arch, requests: list[EditRequest], layer: int, z_layer: int,
                 prefixes: list[str], batch_tokens: int, padding_side: str = "right"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys at ``layer`` averaged over the prefixed prompts (d_ff, n), and the current output of
    block ``z_layer`` at the subject's last token of the bare prompt (n, d_model).

    When ``z_layer`` is above ``layer``, two passes: the many prefixed prompts run only up to
    ``layer``'s MLP, and the bare prompts alone go on to block ``z_layer`` (on a band of six
    layers that saves about a fifth of the keys' time). Otherwise (ROME) one pass gives both."""
    per = 1 + len(prefixes)
    encs = [encode_filled(tokenizer, r.prompt, r.subject, prefix=p) for r in requests for p in ["", *prefixes]]
    key_point, z_point = (arch.mlp_out_name(layer), "input"), (arch.block_name(z_layer), "output")
    one_pass = z_layer == layer
    got = _at_subject_last(model, tokenizer, encs, [key_point, z_point] if one_pass else [key_point],
                           batch_tokens, padding_side, group=per)
    keys = got[0].view(-1, per, got[0].shape[-1]).mean(1)
    cur = got[1][::per] if one_pass else current_outputs(model, tokenizer, arch, requests, z_layer, batch_tokens,
                                                         padding_side)
    return keys.T, cur
