"""Every row of the architecture table, on a tiny random-weight model built from its config."""

import pytest
import torch

import memit
from helpers import ALL_TYPES, tiny_model
from memit import hooks
from memit.hparams import MemitHyperParams
from memit.keys import Walk, compute_keys
from memit.models.arch import ARCHS, UnsupportedModelError, as_math, get_arch, out_weight
from memit.postnorm import pre_norm_change
from memit.stats import second_moments
from memit.tokens import encode_filled

REQ = memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome", "Paris")
POST_NORM = {"gemma2", "gemma3_text"}  # a norm after the MLP: block output is not linear in W_out


def _hp(layer, corpus, **kw):
    return MemitHyperParams(layers=[layer], lam=1e-6, prefixes=[], stats_corpus=corpus, stats_tokens=3000,
                            stats_seq_len=32, v_num_grad_steps=5, **kw)


def _at_subject(model, tok, arch, layer):
    enc = encode_filled(tok, REQ.prompt, REQ.subject)
    x = torch.tensor([enc.ids])
    names = [arch.mlp_out_name(layer), arch.block_name(layer)]
    with hooks.record(model, names[:1], what="input") as k, hooks.record(model, names) as o:
        model(input_ids=x)
    i = enc.subject_last
    return k[names[0]][0, i], o[names[0]][0, i], o[names[1]][0, i]


@pytest.mark.filterwarnings("ignore:.*poorly conditioned")  # λ → 0 on purpose: the system is near singular
@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_one_edit_maps_key_to_intended_value(model_type, bpe, corpus_file):
    model = tiny_model(model_type, bpe)
    arch = get_arch(model)
    layer = 2
    key0, val0, block0 = _at_subject(model, bpe, arch, layer)
    delta = memit.edit(model, bpe, [REQ], _hp(layer, corpus_file), progress=False)
    key1, val1, block1 = _at_subject(model, bpe, arch, layer)
    z = delta.aux["targets"].z[0]
    torch.testing.assert_close(key1, key0)  # the key is read before the edited weight
    # W_out k moved by exactly the residual z − h (λ → 0, one request, one layer); after a norm on
    # the MLP output (Gemma 2/3), by the change that the norm turns into it (postnorm.py).
    want = z - block0
    if model_type in POST_NORM:
        norm = model.get_submodule(arch.post_mlp_norm_name(layer))
        want = pre_norm_change(norm, val0[:, None].double(), want[:, None].double())[:, 0].float()
    torch.testing.assert_close(val1 - val0, want, rtol=1e-3, atol=1e-4)
    if model_type not in POST_NORM:
        torch.testing.assert_close(block1, z, rtol=1e-3, atol=1e-4)
    assert not torch.equal(out_weight(model, arch, layer), delta.original(arch.mlp_out_name(layer) + ".weight"))
    delta.revert(model)
    _, val2, _ = _at_subject(model, bpe, arch, layer)
    assert torch.equal(val2, val0)


def test_gpt2_conv1d_is_transposed(bpe, corpus_file):
    model = tiny_model("gpt2", bpe)
    arch = get_arch(model)
    w = out_weight(model, arch, 1)
    assert arch.conv1d and w.shape == (128, 32)  # Conv1D stores (d_ff, d_model)
    assert as_math(w, arch).shape == (32, 128)
    delta = memit.edit(model, bpe, [REQ], _hp(1, corpus_file), progress=False)
    d = delta.weights["transformer.h.1.mlp.c_proj.weight"]
    keys = delta.aux["keys"][1]  # (d_ff, 1)
    # in storage orientation the change is Kᵀ-side first: ΔW_storage = Δᵀ, so k @ ΔW_storage is the value change
    value_change = keys[:, 0] @ d
    z, h = delta.aux["targets"].z[0], delta.aux["targets"].h[0]
    torch.testing.assert_close(value_change, z - h, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_left_and_right_padding_give_the_same_keys(model_type, bpe):
    model = tiny_model(model_type, bpe)
    arch = get_arch(model)
    reqs = [REQ, memit.EditRequest("Everyone knows that {} plays the", "Toko Yasuda", "piano")]
    prefixes = ["Because of it, the day was long. "]
    alone = [compute_keys(model, bpe, arch, [r], 1, 2, prefixes, 4096) for r in reqs]
    for side in ("left", "right"):
        keys, cur = compute_keys(model, bpe, arch, reqs, 1, 2, prefixes, 4096, side)
        for j, (k1, c1) in enumerate(alone):
            torch.testing.assert_close(keys[:, j], k1[:, 0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(cur[j], c1[0], rtol=1e-4, atol=1e-5)


def _reference_keys(model, tok, arch, reqs, prefixes, layer, z_layer):
    """One prompt at a time through the whole model: the averaged key at ``layer`` and the bare
    prompt's output of block ``z_layer``, both at the last subject token."""
    keys, cur = [], []
    for r in reqs:
        ks = []
        for p in ["", *prefixes]:
            enc = encode_filled(tok, r.prompt, r.subject, prefix=p)
            with hooks.record(model, [arch.mlp_out_name(layer)], what="input") as k_in, \
                    hooks.record(model, [arch.block_name(z_layer)]) as z_out:
                model(input_ids=torch.tensor([enc.ids]))
            ks.append(k_in[arch.mlp_out_name(layer)][0, enc.subject_last])
            if p == "":
                cur.append(z_out[arch.block_name(z_layer)][0, enc.subject_last])
        keys.append(torch.stack(ks).mean(0))
    return torch.stack(keys, 1), torch.stack(cur)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_keys_run_only_the_bare_prompts_above_the_edited_layer(model_type, bpe):
    """The prefixed prompts stop at the edited layer's MLP; the result equals a full forward pass,
    and so does the one-pass case where the edited layer is the last (ROME)."""
    model = tiny_model(model_type, bpe)
    arch = get_arch(model)
    reqs = [REQ, memit.EditRequest("Everyone knows that {} plays the", "Toko Yasuda", "piano")]
    prefixes = ["Because of it, the day was long. ", "So. "]
    rows = {i: [] for i in range(4)}
    handles = [model.get_submodule(arch.block_name(i)).register_forward_hook(
        lambda m, a, o, i=i: rows[i].append((o[0] if isinstance(o, tuple) else o).shape[0])) for i in range(4)]
    try:
        keys, cur = compute_keys(model, bpe, arch, reqs, 1, 2, prefixes, 4096)
    finally:
        for h in handles:
            h.remove()
    assert sum(rows[0]) == len(reqs) * (1 + len(prefixes)) + len(reqs)  # keys pass, then the bare pass
    assert sum(rows[1]) == sum(rows[2]) == len(reqs) and rows[3] == []  # the keys pass stopped inside block 1
    for layer, z_layer in ((1, 2), (2, 2)):
        if (layer, z_layer) != (1, 2):
            keys, cur = compute_keys(model, bpe, arch, reqs, layer, z_layer, prefixes, 4096)
        ref_keys, ref_cur = _reference_keys(model, bpe, arch, reqs, prefixes, layer, z_layer)
        torch.testing.assert_close(keys, ref_keys, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cur, ref_cur, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model_type", ALL_TYPES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_walk_up_the_band_gives_the_keys_of_full_passes_bit_for_bit(model_type, side, bpe):
    """Keys and current outputs layer by layer, the model edited in between as MEMIT edits it,
    equal full passes from the embedding exactly; and the walk runs fewer block rows."""
    model = tiny_model(model_type, bpe)
    arch = get_arch(model)
    reqs = [REQ, memit.EditRequest("Everyone knows that {} plays the", "Toko Yasuda", "piano"),
            memit.EditRequest("{} speaks", "Danielle", "French")]
    prefixes = ["Because of it, the day was long. ", "So. "]
    count = [0]
    handles = [model.get_submodule(arch.block_name(i)).register_forward_hook(
        lambda m, a, o: count.__setitem__(0, count[0] + (o[0] if isinstance(o, tuple) else o).shape[0]))
        for i in range(4)]
    walk = Walk(model, bpe, arch, reqs, 3, prefixes, 64, side)  # several batches
    walked = full = 0
    torch.manual_seed(1)
    try:
        for layer in (0, 1, 3):  # with a gap: block 2 is run, never kept
            count[0] = 0
            keys, cur = walk.at(model, layer)
            walked += count[0]
            count[0] = 0
            ref_keys, ref_cur = compute_keys(model, bpe, arch, reqs, layer, 3, prefixes, 64, side)
            full += count[0]
            assert torch.equal(keys, ref_keys) and torch.equal(cur, ref_cur), layer
            name = arch.mlp_out_name(layer) + ".weight"
            w = model.get_parameter(name)
            with torch.no_grad():
                w += 0.3 * w.std() * torch.randn_like(w)  # this layer's edit
        reached = walk.current(model)
        assert torch.equal(reached, compute_keys(model, bpe, arch, reqs, 3, 3, [], 64, side)[1])
    finally:
        for h in handles:
            h.remove()
    assert walked < full
    with pytest.raises(ValueError, match="goes up its band"):
        walk.at(model, 1)


def test_padding_side_does_not_change_the_edit(bpe, corpus_file):
    reqs = [REQ, memit.EditRequest("Everyone knows that {} plays the", "Toko Yasuda", "piano")]
    deltas = []
    for side in ("left", "right"):
        model = tiny_model("llama", bpe)
        deltas.append(memit.edit(model, bpe, reqs, _hp(2, corpus_file, padding_side=side), apply=False,
                                 progress=False))
    for name in deltas[0].weights:
        torch.testing.assert_close(deltas[0].weights[name], deltas[1].weights[name], rtol=1e-3, atol=1e-5)


def test_statistics_stop_after_the_last_layer(bpe, corpus_file):
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    ran = []
    handles = [model.get_submodule(arch.block_name(i)).register_forward_hook(lambda *a, i=i: ran.append(i))
               for i in range(4)]
    second_moments(model, bpe, arch, [0, 1], corpus=corpus_file, max_tokens=64, seq_len=32, use_cache=False,
                   progress=False)
    for h in handles:
        h.remove()
    assert 0 in ran and 2 not in ran and 3 not in ran  # stopped inside block 1


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_skipped_blocks_give_the_same_output_and_come_back(model_type, bpe):
    """The target-vector steps run only the blocks above the edited one, from its recorded output."""
    model = tiny_model(model_type, bpe)
    arch = get_arch(model)
    ids = torch.tensor([bpe("The Eiffel Tower is in Paris")["input_ids"]] * 3)
    full = model.base_model(input_ids=ids)[0]
    with hooks.record(model, [arch.block_name(1)], whole=True) as seen:
        model.base_model(input_ids=ids)
    blocks = list(model.get_submodule(arch.blocks))
    ran = []
    handles = [b.register_forward_hook(lambda *a, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    rows = torch.tensor([2, 0])
    with hooks.skip_blocks(model, arch.blocks, 1, seen[arch.block_name(1)], rows):
        upper = model.base_model(input_ids=ids[rows])[0]
    assert ran == list(range(2, len(blocks)))  # blocks 0 and 1 did not run
    torch.testing.assert_close(upper, full[rows], rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError), hooks.skip_blocks(model, arch.blocks, 1, seen[arch.block_name(1)]):
        raise RuntimeError
    assert list(model.get_submodule(arch.blocks)) == blocks  # the real blocks are back
    for h in handles:
        h.remove()


def test_unknown_architecture_lists_supported_and_explains_override(bpe):
    model = tiny_model("llama", bpe)
    model.config.model_type = "mystery"
    with pytest.raises(UnsupportedModelError) as e:
        get_arch(model)
    assert "llama" in str(e.value) and "gpt2" in str(e.value) and "mlp_out" in str(e.value)
    arch = get_arch(model, dict(ARCHS["llama"].__dict__))
    assert arch.mlp_out_name(3) == "model.layers.3.mlp.down_proj"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_are_edited_like_float32(dtype, bpe, corpus_file):
    hp = MemitHyperParams(layers=[1, 2], lam=1e-2, prefixes=[], stats_corpus=corpus_file, stats_tokens=3000,
                          stats_seq_len=32, v_num_grad_steps=5)
    ref = memit.edit(tiny_model("llama", bpe), bpe, [REQ], hp, progress=False)
    model = tiny_model("llama", bpe, dtype=dtype)
    half = memit.edit(model, bpe, [REQ], hp, progress=False)
    for name, d in half.weights.items():
        assert d.dtype == torch.float32 and torch.isfinite(d).all()
        assert model.get_parameter(name).dtype == dtype  # cast back only at the end
        assert (d - ref.weights[name]).norm() / ref.weights[name].norm() < 0.1
