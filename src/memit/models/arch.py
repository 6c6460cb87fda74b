"""Per-architecture facts, as one table keyed by ``config.model_type``.

Everything the editor needs to know about a model family lives in one row here, so adding a
family is adding a row, not hunting for if/elif branches. Module names use ``{}`` for the
block index.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Arch:
    """Where the editable pieces of one model family live."""

    blocks: str  # the ModuleList of transformer blocks
    mlp_out: str  # the MLP down/output projection W_out of block {}
    final_norm: str
    lm_head: str
    d_model_key: str  # config key holding d_model
    d_ff_key: str  # config key holding d_ff (None in the config means 4 * d_model)
    conv1d: bool = False  # GPT-2's Conv1D stores W_out transposed: (d_ff, d_model)
    attn: str = "self_attn"  # attention module inside a block (causal tracing)
    mlp: str = "mlp"  # MLP module inside a block (causal tracing)
    softcap_key: str | None = None  # config key of a final logit soft-cap, if any
    post_mlp_norm: str | None = None  # a norm applied to the MLP output of block {} before the residual add

    def post_mlp_norm_name(self, layer: int) -> str | None:
        return self.post_mlp_norm.format(layer) if self.post_mlp_norm else None

    def mlp_out_name(self, layer: int) -> str:
        return self.mlp_out.format(layer)

    def block_name(self, layer: int) -> str:
        return f"{self.blocks}.{layer}"

    def part_name(self, kind: str, layer: int) -> str:
        """Module whose output is a (token, layer) state: kind 'hidden' (block), 'mlp' or 'attn'."""
        block = self.block_name(layer)
        return block if kind == "hidden" else f"{block}.{self.mlp if kind == 'mlp' else self.attn}"


_LLAMA_LIKE = Arch(
    blocks="model.layers",
    mlp_out="model.layers.{}.mlp.down_proj",
    final_norm="model.norm",
    lm_head="lm_head",
    d_model_key="hidden_size",
    d_ff_key="intermediate_size",
)

ARCHS: dict[str, Arch] = {
    "gpt2": Arch(
        blocks="transformer.h",
        mlp_out="transformer.h.{}.mlp.c_proj",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        d_model_key="n_embd",
        d_ff_key="n_inner",
        conv1d=True,
        attn="attn",
    ),
    "gptj": Arch(
        blocks="transformer.h",
        mlp_out="transformer.h.{}.mlp.fc_out",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        d_model_key="n_embd",
        d_ff_key="n_inner",
        attn="attn",
    ),
    "gpt_neox": Arch(
        blocks="gpt_neox.layers",
        mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        lm_head="lm_head",
        d_model_key="hidden_size",
        d_ff_key="intermediate_size",
        attn="attention",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    # Gemma 2/3 normalise the MLP output before adding it to the residual stream: the edit asks
    # each layer for the change that the norm turns into the wanted one (postnorm.py).
    "gemma": _LLAMA_LIKE,
    "gemma2": replace(_LLAMA_LIKE, softcap_key="final_logit_softcapping",
                      post_mlp_norm="model.layers.{}.post_feedforward_layernorm"),
    "gemma3_text": replace(_LLAMA_LIKE, softcap_key="final_logit_softcapping",
                           post_mlp_norm="model.layers.{}.post_feedforward_layernorm"),
}


class UnsupportedModelError(ValueError):
    pass


def get_arch(model: torch.nn.Module, override: dict | None = None) -> Arch:
    """The row for this model, or one built from explicit module names (``override``).

    ``override`` takes the same field names as :class:`Arch`; for an unknown family all of
    ``blocks``, ``mlp_out``, ``final_norm``, ``lm_head``, ``d_model_key`` and ``d_ff_key``.
    """
    model_type = getattr(model.config, "model_type", None)
    base = ARCHS.get(model_type)
    if base is None and not override:
        raise UnsupportedModelError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(ARCHS))}. "
            "For another family pass the module names explicitly, e.g. "
            "memit.models.arch.Arch(blocks='model.layers', mlp_out='model.layers.{}.mlp.down_proj', "
            "final_norm='model.norm', lm_head='lm_head', d_model_key='hidden_size', "
            "d_ff_key='intermediate_size') as arch=..."
        )
    if override:
        try:
            return replace(base, **override) if base else Arch(**override)
        except TypeError as e:
            raise UnsupportedModelError(f"bad architecture override: {e}") from None
    return base


def n_layers(model: torch.nn.Module, arch: Arch) -> int:
    return len(model.get_submodule(arch.blocks))


def dims(model: torch.nn.Module, arch: Arch) -> tuple[int, int]:
    """(d_model, d_ff) from the config, as the table says where to find them."""
    d_model = getattr(model.config, arch.d_model_key)
    d_ff = getattr(model.config, arch.d_ff_key, None) or 4 * d_model
    return d_model, d_ff


def out_weight(model: torch.nn.Module, arch: Arch, layer: int) -> torch.nn.Parameter:
    return model.get_submodule(arch.mlp_out_name(layer)).weight


def as_math(weight: torch.Tensor, arch: Arch) -> torch.Tensor:
    """W_out in the algorithm's orientation, (d_model, d_ff), whatever the storage."""
    return weight.T if arch.conv1d else weight


def logits(model: torch.nn.Module, arch: Arch, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits of final (already normed) hidden states, with the family's soft-cap."""
    out = model.get_submodule(arch.lm_head)(hidden)
    cap = getattr(model.config, arch.softcap_key, None) if arch.softcap_key else None
    if cap:
        out = torch.tanh(out / cap) * cap
    return out
