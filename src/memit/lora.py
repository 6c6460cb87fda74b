"""An edit as a PEFT LoRA adapter, and a LoRA adapter back as a Delta.

A MEMIT update of n facts is ΔW = R·Aᵀ on each edited MLP output projection: a LoRA adapter of
rank n, with lora_B = R and lora_A = Aᵀ. Written in PEFT's own layout (``adapter_config.json`` and
``adapter_model.safetensors``), ``PeftModel.from_pretrained`` loads it, and servers that take many
LoRA adapters on one base model (vLLM, TGI) can serve it. vLLM caps the rank (``max_lora_rank``,
at most 512): ``rank`` then keeps the best approximation of that rank (truncated SVD), and its
relative error per layer is reported, because a truncated adapter is a different edit.

lora_alpha equals r, so PEFT's scaling alpha/r is 1 and the adapter adds exactly B·A.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from memit.delta import Delta
from memit.lowrank import LowRank, factorise
from memit.models.arch import ARCHS

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


class LoraError(ValueError):
    pass


def _split(param: str) -> tuple[str, int, str]:
    """'model.layers.3.mlp.down_proj.weight' -> ('model.layers', 3, 'mlp.down_proj')."""
    m = re.fullmatch(r"(.+)\.(\d+)\.(.+)\.weight", param)
    if not m:
        raise LoraError(f"{param}: not a weight inside a numbered block; a LoRA adapter cannot address it")
    return m.group(1), int(m.group(2)), m.group(3)


def factors_of(delta: Delta) -> dict[str, LowRank]:
    """Every change as factors: the edit's own where it made them, else by SVD of the dense change."""
    arch = ARCHS.get(delta.meta.get("model_type"))
    conv1d = bool(arch and arch.conv1d)
    out = {}
    for name, d in delta.weights.items():
        f = delta.factors.get(name)
        out[name] = f if f is not None else factorise(d, transposed=conv1d, tol=1e-12)
    return out


def summed(deltas: list[Delta]) -> Delta:
    """The steps of a journal as one change per weight (their factors side by side)."""
    parts: dict[str, list[LowRank]] = {}
    for d in deltas:
        for name, f in factors_of(d).items():
            parts.setdefault(name, []).append(f)
    factors = {n: LowRank.cat(fs) for n, fs in parts.items()}
    return Delta({n: f.dense() for n, f in factors.items()}, dict(deltas[-1].meta) | {"steps": len(deltas)}, factors)


def save_lora(delta: Delta, out: str | Path, *, rank: int | None = None, base_model: str | None = None) -> dict:
    """Write ``delta`` as a PEFT LoRA adapter in the folder ``out``; per layer: rank and relative error.

    Every layer gets the same rank r (the largest needed, at most ``rank``); a layer whose change
    has a lower rank is padded with zero columns, which adds nothing.
    """
    factors = factors_of(delta)
    if not factors:
        raise LoraError("the delta changes no weights")
    layers, cut = {}, {}
    for name, f in factors.items():
        blocks, layer, module = _split(name)
        most = min(f.left.shape[0], f.right.shape[1])
        if rank is not None and rank > most:
            raise LoraError(f"--rank {rank} is larger than possible: {name} is {f.left.shape[0]}×{f.right.shape[1]}, "
                            f"so its change has rank at most {most}")
        err = 0.0
        if rank is not None and f.rank > rank:
            f, err = f.truncated(rank)
        cut[name] = f
        layers[name] = {"layer": layer, "rank": f.rank, "rel_error": err, "blocks": blocks, "module": module}
    modules = {x["module"] for x in layers.values()}
    blocks = {x["blocks"] for x in layers.values()}
    transposed = {f.transposed for f in cut.values()}
    if len(modules) > 1 or len(blocks) > 1 or len(transposed) > 1:
        raise LoraError(f"the delta changes different kinds of weights ({', '.join(sorted(modules))}); "
                        "one adapter holds one module per block")
    r = max(f.rank for f in cut.values())
    if r == 0:
        raise LoraError("the delta is zero; there is nothing to export")
    tensors = {}
    for name, f in cut.items():
        b, a = f.left.double(), f.right.double()
        if f.rank < r:  # zero columns/rows: the same product at the common rank
            b = torch.cat([b, b.new_zeros(b.shape[0], r - f.rank)], dim=1)
            a = torch.cat([a, a.new_zeros(r - f.rank, a.shape[1])], dim=0)
        module = name.removesuffix(".weight")
        tensors[f"{PREFIX}{module}.lora_A.weight"] = a.float().contiguous()
        tensors[f"{PREFIX}{module}.lora_B.weight"] = b.float().contiguous()
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": r, "lora_alpha": r, "lora_dropout": 0.0, "bias": "none", "use_rslora": False, "use_dora": False,
        "target_modules": sorted(modules), "layers_to_transform": sorted(x["layer"] for x in layers.values()),
        "layers_pattern": next(iter(blocks)).rsplit(".", 1)[-1], "fan_in_fan_out": transposed == {True},
        "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(json.dumps(config, indent=1))
    return {"r": r, "layers": [{k: v for k, v in x.items() if k in ("layer", "rank", "rel_error")}
                               for x in sorted(layers.values(), key=lambda x: x["layer"])]}


def is_lora(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / CONFIG).exists()


def load_lora(path: str | Path) -> Delta:
    """A LoRA adapter (ours or any PEFT LoRA of linear layers) as a Delta that ``apply`` merges."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG).read_text())
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, ValueError) as e:
        raise LoraError(f"{path}: not a readable LoRA adapter ({e})") from None
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise LoraError(f"{path}: a {config.get('peft_type')} adapter{' with DoRA' if config.get('use_dora') else ''}; "
                        "only plain LoRA can be read")
    r, alpha = config["r"], config.get("lora_alpha", config["r"])
    scale = alpha / r ** 0.5 if config.get("use_rslora") else alpha / r
    factors = {}
    for key, a in tensors.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_A(?:\.[^.]+)?\.weight", key)
        if not m:
            continue
        b = tensors.get(key.replace("lora_A", "lora_B"))
        if b is None:
            raise LoraError(f"{path}: {key} has no lora_B")
        factors[m.group(1) + ".weight"] = LowRank(b.double() * scale, a.double(), bool(config.get("fan_in_fan_out")))
    if not factors:
        raise LoraError(f"{path}: the adapter holds no LoRA weights")
    meta = {"method": "lora", "source": str(path), "lora_r": r}
    return Delta({n: f.dense().float() for n, f in factors.items()}, meta, factors)
