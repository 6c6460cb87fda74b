"""GGUF out: the input file's metadata and tensors, with only the edited tensors replaced, in
their own quantisation type where gguf can write it."""

import gguf
import numpy as np
import pytest
import torch

from memit.gguf_out import GgufOutError, write_gguf

Q = gguf.GGMLQuantizationType


def _source(path, down_type=Q.Q4_1):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(64)
    w.add_string("general.name", "tiny")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    tensors = {"token_embd.weight": (rng.normal(size=(3, 64)).astype(np.float32), Q.F32)}
    for b in range(2):
        tensors[f"blk.{b}.ffn_norm.weight"] = (np.ones(64, dtype=np.float32), Q.F32)
        tensors[f"blk.{b}.ffn_down.weight"] = (rng.normal(size=(64, 256)).astype(np.float32), down_type)
    for name, (x, q) in tensors.items():
        if q == Q.Q6_K:  # gguf cannot quantise K-types: any bytes of the right size stand for one
            data = rng.integers(0, 255, size=gguf.quant_shape_to_byte_shape(x.shape, q), dtype=np.uint8)
        else:
            data = x if q == Q.F32 else gguf.quants.quantize(x, q)
        w.add_tensor(name, data, raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {n: x for n, (x, _) in tensors.items()}


def _read(path):
    r = gguf.GGUFReader(str(path))
    kv = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}
    return kv, {t.name: t for t in r.tensors}


def test_only_the_edited_tensor_changes_and_keeps_its_type(tmp_path):
    src, dst = tmp_path / "in.gguf", tmp_path / "out.gguf"
    values = _source(src)
    new = torch.tensor(values["blk.1.ffn_down.weight"]) + 0.5 * torch.randn(64, 256)
    report = write_gguf(src, dst, {"model.layers.1.mlp.down_proj.weight": new})
    assert report == [{"param": "model.layers.1.mlp.down_proj.weight", "tensor": "blk.1.ffn_down.weight",
                       "was": "Q4_1", "written": "Q4_1"}]
    kv0, t0 = _read(src)
    kv1, t1 = _read(dst)
    assert kv1 == kv0 and list(t1) == list(t0)
    for name in t0:
        if name != "blk.1.ffn_down.weight":
            assert np.array_equal(t1[name].data, t0[name].data), name  # byte for byte
    got = gguf.quants.dequantize(t1["blk.1.ffn_down.weight"].data, Q.Q4_1)
    want = new.numpy()
    assert np.abs(got - want).max() < 0.6 * (want.max() - want.min()) / 15  # within one Q4_1 step of the block
    assert not np.array_equal(got, gguf.quants.dequantize(t0["blk.1.ffn_down.weight"].data, Q.Q4_1))


def test_f32_on_request_and_where_gguf_cannot_quantise(tmp_path):
    src = tmp_path / "in.gguf"
    values = _source(src, down_type=Q.Q6_K)
    new = torch.tensor(values["blk.0.ffn_down.weight"]).T  # a transposed weight (GPT-2's Conv1D) is turned round
    report = write_gguf(src, tmp_path / "k.gguf", {"model.layers.0.mlp.down_proj.weight": new})
    assert report[0]["written"] == "F32" and "cannot quantise Q6_K" in report[0]["note"]
    _, t = _read(tmp_path / "k.gguf")
    assert np.array_equal(t["blk.0.ffn_down.weight"].data, new.T.numpy())
    _source(tmp_path / "q.gguf")
    report = write_gguf(tmp_path / "q.gguf", tmp_path / "f.gguf", {"model.layers.0.mlp.down_proj.weight": new.T},
                        keep_type=False)
    assert report[0]["written"] == "F32"


def test_a_weight_the_file_does_not_hold_is_refused(tmp_path):
    src = tmp_path / "in.gguf"
    _source(src)
    with pytest.raises(GgufOutError, match="no tensor blk.0.ffn_gate.weight"):
        write_gguf(src, tmp_path / "o.gguf", {"model.layers.0.mlp.gate_proj.weight": torch.zeros(256, 64)})
    with pytest.raises(GgufOutError, match="no GGUF name"):
        write_gguf(src, tmp_path / "o.gguf", {"model.layers.5.mlp.down_proj.weight": torch.zeros(64, 256)})
    with pytest.raises(GgufOutError, match="does not fit"):
        write_gguf(src, tmp_path / "o.gguf", {"model.layers.1.mlp.down_proj.weight": torch.zeros(64, 64)})
    assert not (tmp_path / "o.gguf").exists() and not (tmp_path / "o.gguf.partial").exists()
