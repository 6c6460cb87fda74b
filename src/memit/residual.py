"""The model's typical residual norm at a block: what a cap on δ can be stated against.

The paper caps each fact's δ at a share of that fact's own ‖h‖ at the subject's last token, so a
subject whose hidden state happens to be large may move further. A cap stated against the norm
of ordinary text's residual stream at the same block is the same for every fact, and it carries
over between models as a share. The first token of each window is left out: on many models it
carries an outsized "attention sink" norm that says nothing about other positions.
"""

from __future__ import annotations

import torch

from memit import hooks
from memit.corpus import token_windows
from memit.models.arch import Arch
from memit.weights import input_device


@torch.no_grad()
def typical_norm(model, tokenizer, arch: Arch, layer: int, corpus: str | None = None,
                 tokens: int = 4096, seq_len: int = 256) -> float:
    """Median ‖output of block ``layer``‖ over ``tokens`` tokens of ``corpus`` (None: the bundled text)."""
    windows = token_windows(tokenizer, corpus, seq_len, tokens).to(input_device(model))
    block = arch.block_name(layer)
    norms = []
    for rows in windows.split(8):
        with hooks.record(model, [block], stop=True) as seen:
            hooks.run(model.base_model, input_ids=rows)
        norms.append(seen[block][:, 1:].float().norm(dim=-1).flatten().cpu())
    return float(torch.cat(norms).median())
