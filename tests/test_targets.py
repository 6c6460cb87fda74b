"""The fast target-vector optimisation equals the plain per-request loop (the paper's structure)."""

import pytest
import torch

import memit
import memit.chunk
from helpers import ALL_TYPES, make_tokenizer, tiny_model
from memit import postnorm
from memit.hparams import MemitHyperParams
from memit.models.arch import get_arch
from memit.targets import compute_targets
from targets_reference import reference_targets

REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano"),
        memit.EditRequest("{} speaks", "Danielle", "French and English")]
PREFIXES = ["Because of it. ", "I said that the day was long. "]


@pytest.fixture(params=["one pass", "KL rows apart"])
def kl_pass(request, monkeypatch):
    """Both ways a chunk may run its KL rows: with the rewriting rows, or as a pass of their own."""
    monkeypatch.setattr(memit.chunk, "SEPARATE_KL_TOKENS", 10**9 if request.param == "one pass" else 0)
    return request.param


@pytest.mark.parametrize("model_type", ALL_TYPES)
@pytest.mark.parametrize("kind,bos", [("bpe", False), ("sp", True)])
def test_fast_equals_reference(model_type, kind, bos, kl_pass):
    tok = make_tokenizer(kind, bos)
    model = tiny_model(model_type, tok)
    hp = MemitHyperParams(v_num_grad_steps=6, v_lr=0.05, batch_tokens=64)  # several chunks
    fast = compute_targets(model, tok, get_arch(model), REQS, 2, PREFIXES, hp, progress=False)
    ref = reference_targets(model, tok, get_arch(model), REQS, 2, PREFIXES, hp)
    torch.testing.assert_close(fast.h, ref.h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.z, ref.z, rtol=1e-4, atol=1e-5)
    assert fast.steps == ref.steps
    assert fast.loss == pytest.approx(ref.loss, rel=1e-4)


def test_early_stop_and_clamp_per_request(bpe):
    model = tiny_model("llama", bpe)
    # a threshold only some requests reach after a few steps: finished ones leave, the rest go on
    hp = MemitHyperParams(v_num_grad_steps=1, v_lr=0.5, clamp_norm_factor=0.05)
    initial = compute_targets(model, bpe, get_arch(model), REQS, 2, PREFIXES, hp, progress=False).loss
    hp.v_num_grad_steps, hp.v_loss_threshold = 8, sorted(initial)[1] - 1e-4
    fast = compute_targets(model, bpe, get_arch(model), REQS, 2, PREFIXES, hp, progress=False)
    ref = reference_targets(model, bpe, get_arch(model), REQS, 2, PREFIXES, hp)
    assert fast.steps == ref.steps and len(set(fast.steps)) > 1
    assert fast.converged == ref.converged and any(fast.converged) and not all(fast.converged)
    torch.testing.assert_close(fast.z, ref.z, rtol=1e-4, atol=1e-5)
    norms = (fast.z - fast.h).norm(dim=1) / fast.h.norm(dim=1)
    assert (norms <= 0.05 + 1e-5).all()
    assert fast.clamped == [s > 1 for s in fast.steps]  # δ of the ones that ran hit the tight clamp


def test_stored_requests_resume_and_are_shared(bpe, tmp_path, monkeypatch):
    import memit.targets as targets_mod

    model = tiny_model("llama", bpe)
    hp = MemitHyperParams(v_num_grad_steps=4, v_lr=0.05, batch_tokens=64)  # one request per chunk
    args = (model, bpe, get_arch(model), REQS, 2, PREFIXES, hp)
    keys = ["a" * 40, "b" * 40, "c" * 40]
    whole = compute_targets(*args, progress=False)
    real, calls = targets_mod._optimise, []

    def dies_on_second_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(targets_mod, "_optimise", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        compute_targets(*args, progress=False, store=tmp_path, keys=keys)
    monkeypatch.setattr(targets_mod, "_optimise", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    calls.clear()
    resumed = compute_targets(*args, progress=False, store=tmp_path, keys=keys)
    assert len(calls) == 2  # the request finished before the interruption was not redone
    assert resumed.cached == 1 and whole.cached == 0  # and the result says so
    torch.testing.assert_close(resumed.z, whole.z)
    assert resumed.steps == whole.steps and resumed.converged == whole.converged
    calls.clear()
    again = compute_targets(*args, progress=False, store=tmp_path, keys=keys)
    assert not calls and torch.equal(again.z, resumed.z) and again.cached == 3  # all stored: nothing optimised
    # a run with one request in common computes only the new ones, in the caller's order
    new = memit.EditRequest("{} was born in", "Marie Curie", "Warsaw")
    mixed = compute_targets(model, bpe, get_arch(model), [new, REQS[1]], 2, PREFIXES, hp, progress=False,
                            store=tmp_path, keys=["d" * 40, keys[1]])
    assert len(calls) == 1
    torch.testing.assert_close(mixed.z[1], whole.z[1])
    calls.clear()
    compute_targets(*args, progress=False, store=tmp_path, keys=["x" * 40, "y" * 40, "z" * 40])
    assert len(calls) == 3  # requests stored under other settings (other keys) are not used


def test_requests_are_chunked_by_suffix_length(bpe, monkeypatch):
    """Short suffixes are optimised together; results still come back in the caller's order."""
    import memit.targets as targets_mod

    model = tiny_model("llama", bpe)
    hp = MemitHyperParams(v_num_grad_steps=2, v_lr=0.05, batch_tokens=64)
    seen, real = [], targets_mod._optimise
    monkeypatch.setattr(targets_mod, "_optimise", lambda m, a, chunk, reqs, *r: (seen.append(chunk.ids.shape[1]),
                                                                                 real(m, a, chunk, reqs, *r))[1])
    compute_targets(model, bpe, get_arch(model), REQS, 2, PREFIXES, hp, progress=False)
    assert seen == sorted(seen) and len(set(seen)) > 1  # the long "Eiffel Tower" suffix is not first


def test_the_target_cache_key_is_made_of_every_setting_the_loop_reads():
    import dataclasses
    import re
    from pathlib import Path

    import memit.targets
    from memit.hparams import LATER_FIELDS, STOP_FIELDS, TARGET_FIELDS

    hp = MemitHyperParams()
    assert set(hp.target_dict()) == TARGET_FIELDS  # the paper's rule: keys as they were before stopping rules
    assert set(dataclasses.replace(hp, stop="margin").target_dict()) == TARGET_FIELDS | STOP_FIELDS
    read = set(re.findall(r"\bhp\.([a-z_]+)\b", Path(memit.targets.__file__).read_text()))
    known = {f.name for f in dataclasses.fields(MemitHyperParams)}
    assert read & known <= TARGET_FIELDS | STOP_FIELDS | LATER_FIELDS, "a setting the loop reads is not in its key"
    assert dataclasses.replace(hp, v_init="gradient").target_dict() == hp.target_dict() | {"v_init": "gradient"}
    for name, value in (("lam_per_dff", 3.0), ("layers", [1, 8]), ("stats_tokens", 5), ("ridge", 1.0), ("rounds", 3)):
        assert dataclasses.replace(hp, **{name: value}).target_dict() == hp.target_dict()  # one optimisation, reused


def test_gradient_init_takes_one_normalised_step_to_a_share_of_the_clamp(bpe):
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    hp = MemitHyperParams(v_num_grad_steps=2, v_lr=0.5, clamp_norm_factor=2.0, v_loss_threshold=0.0)
    adam = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)
    hp.v_init, hp.v_init_scale = "gradient", 0.25
    grad = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)
    torch.testing.assert_close(grad.h, adam.h)  # the hidden state before any δ
    step, first = grad.z - grad.h, adam.z - adam.h  # the first step of each (the second pass only measures)
    torch.testing.assert_close(step.norm(dim=1), 0.25 * 2.0 * grad.h.norm(dim=1))
    assert not torch.allclose(first.norm(dim=1), step.norm(dim=1))
    # the same descent direction as Adam's first step, which is the gradient's sign
    assert (torch.nn.functional.cosine_similarity(step, first, dim=1) > 0.5).all()
    hp.v_init = "random"
    with pytest.raises(ValueError, match="v_init must be zero or gradient"):
        compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)


def test_typical_clamp_is_one_norm_for_every_request(bpe):
    """clamp_ref "typical": every δ is capped at the same share of one reference norm, which is the
    median block output over ordinary text, first token of each window left out."""
    from memit import hooks
    from memit.corpus import token_windows
    from memit.residual import typical_norm

    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    rho = typical_norm(model, bpe, arch, 2, tokens=256, seq_len=32)
    windows = token_windows(bpe, None, 32, 256)
    with hooks.record(model, [arch.block_name(2)], stop=True) as seen:
        hooks.run(model.base_model, input_ids=windows)
    assert rho == pytest.approx(float(seen[arch.block_name(2)][:, 1:].norm(dim=-1).median()), rel=1e-5)
    hp = MemitHyperParams(v_num_grad_steps=4, v_lr=0.5, clamp_norm_factor=0.05, clamp_ref="typical")
    t = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False, ref_norm=rho)
    norms = (t.z - t.h).norm(dim=1)
    assert all(t.clamped)
    torch.testing.assert_close(norms, torch.full_like(norms, 0.05 * rho), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="ref_norm"):
        compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)


def test_typical_clamp_through_edit(bpe):
    """The edit computes the reference norm itself and caps every δ at the same length."""
    from memit.residual import typical_norm

    model = tiny_model("llama", bpe)
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, clamp_norm_factor=0.05, clamp_ref="typical",
                          stats_tokens=512, stats_seq_len=32)
    rho = typical_norm(model, bpe, get_arch(model), 2)
    delta = memit.edit(model, bpe, REQS, hp, progress=False)
    assert delta.meta["hparams"]["clamp_ref"] == "typical"
    t = delta.aux["targets"]
    assert all(t.clamped)
    torch.testing.assert_close((t.z - t.h).norm(dim=1), torch.full((3,), 0.05 * rho), rtol=1e-4, atol=1e-6)
    hp.clamp_ref = "nearest"
    with pytest.raises(memit.EditError, match="clamp_ref"):
        memit.edit(model, bpe, REQS, hp, progress=False)


@pytest.mark.parametrize("where", ["mlp", "residual"])
def test_after_a_post_mlp_norm_delta_moves_the_mlp_output_or_the_block_output(bpe, where, kl_pass):
    """Gemma's δ enters before the norm after the MLP ("mlp"), or at the block's output as the
    paper has it ("residual"); either way the fast path is the plain one, and an "mlp" target is
    a change the norm can give: z − h is what the norm makes of a change of the MLP output."""
    model = tiny_model("gemma3_text", bpe)
    hp = MemitHyperParams(v_num_grad_steps=6, v_lr=0.05, v_lr_post_norm=0.2, batch_tokens=64, post_norm_delta=where)
    arch = get_arch(model)
    fast = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)
    ref = reference_targets(model, bpe, arch, REQS, 2, PREFIXES, hp)
    torch.testing.assert_close(fast.z, ref.z, rtol=1e-4, atol=1e-5)
    assert fast.steps == ref.steps and fast.clamped == ref.clamped
    other = compute_targets(model, bpe, arch, REQS, 2, PREFIXES,
                            hp.with_changes({"post_norm_delta": "residual" if where == "mlp" else "mlp"}), progress=False)
    assert not torch.allclose(fast.z, other.z)
    if where == "mlp":  # each row's change has the rms of γ ⊙ (unit vector), as the norm's outputs do
        gamma = postnorm.scale(model.get_submodule(arch.post_mlp_norm_name(2)))
        out_change = fast.z - fast.h
        assert out_change.norm(dim=1).max() < 2 * gamma.norm()
