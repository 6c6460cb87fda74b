"""An edited model back out as GGUF, the file llama.cpp, ollama and LM Studio run.

The output is the input GGUF with the same metadata and the same tensors, byte for byte, except
the tensors the edit changed. Those are quantised again to their original type where the
``gguf`` package can quantise it (Q4_0/1, Q5_0/1, Q8_0, F16, BF16), else written as F32; each is
reported, because a requantised edit is not the edit that was verified: the edited model should
be read back from the file and checked again (``memit edit --out x.gguf`` does).

Names are mapped by gguf's own table (``model.layers.3.mlp.down_proj`` → ``blk.3.ffn_down``);
a change whose shape is the transpose of the GGUF tensor (GPT-2's Conv1D) is transposed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class GgufOutError(ValueError):
    pass


def _arch_enum(gguf, name: str):
    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == name:
            return arch
    raise GgufOutError(f"the gguf package does not know the architecture {name!r}")


def gguf_names(source: str | Path, params: list[str]) -> dict[str, str]:
    """GGUF tensor name of each parameter; refuses a file that does not hold them all, so that an
    edit can be refused before it runs, not after."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    return _names(gguf, reader, source, params)


def _names(gguf, reader, source, params: list[str]) -> dict[str, str]:
    arch = reader.fields["general.architecture"].contents()
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    table = gguf.get_tensor_name_map(_arch_enum(gguf, arch), n_blocks)
    out = {}
    for param in params:
        g = table.get_name(param, try_suffixes=(".weight", ".bias"))
        if g is None:
            raise GgufOutError(f"{param}: no GGUF name for it in the {arch} table")
        out[param] = g
    have = {t.name for t in reader.tensors}
    if missing := sorted(set(out.values()) - have):
        raise GgufOutError(f"{source} has no tensor {', '.join(missing)}")
    return out


def write_gguf(source: str | Path, dest: str | Path, changed: dict[str, torch.Tensor], *,
               keep_type: bool = True) -> list[dict]:
    """Copy ``source`` to ``dest`` with the weights in ``changed`` (parameter name → new weight)
    replaced; per replaced tensor: its GGUF name, the type it had and the type written.

    ``keep_type=False`` writes every changed tensor as F32 (no requantisation error)."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    wanted = {g: (param, changed[param]) for param, g in _names(gguf, reader, source, list(changed)).items()}

    dest = Path(dest)
    partial = dest.with_name(dest.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch, endianess=reader.endianess)
    if "general.alignment" in reader.fields:
        writer.data_alignment = int(reader.fields["general.alignment"].contents())
    for field in reader.fields.values():  # every key as it was; the writer adds the architecture itself
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    report = []
    for t in reader.tensors:
        if t.name not in wanted:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type, tensor_endianess=reader.endianess)
            continue
        param, w = wanted[t.name]
        shape = tuple(int(x) for x in reversed(t.shape))  # numpy order: (rows, columns)
        x = w.detach().float().cpu().numpy()
        if x.shape != shape and x.T.shape == shape:
            x = x.T
        if x.shape != shape:
            raise GgufOutError(f"{param}: shape {x.shape} does not fit {t.name} {shape}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        qtype, note = t.tensor_type, None
        if not keep_type:
            qtype, note = gguf.GGMLQuantizationType.F32, "asked for F32"
        if qtype == gguf.GGMLQuantizationType.F32:
            data = x
        else:
            try:
                data = gguf.quants.quantize(x, qtype)
            except (NotImplementedError, gguf.quants.QuantError):
                qtype, note, data = gguf.GGMLQuantizationType.F32, f"gguf cannot quantise {t.tensor_type.name}", x
        writer.add_tensor(t.name, data, raw_dtype=qtype)  # quantised bytes: the writer derives the shape
        report.append({"param": param, "tensor": t.name, "was": t.tensor_type.name, "written": qtype.name,
                       **({"note": note} if note else {})})
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.replace(dest)  # a crash never leaves a half-written file under the real name
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return report
