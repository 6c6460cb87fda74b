"""ROME, FT-L/FT-W, MEMIT-seq and AlphaEdit: each method's defining property, and each runs on
every architecture family."""

import pytest
import torch

import memit
from helpers import ALL_TYPES, tiny_model
from memit.diagnostics import text_change
from memit.hparams import MemitHyperParams
from memit.keys import compute_keys
from memit.methods import METHODS, run
from memit.methods.memit import edit
from memit.methods.rome import RomeSolve
from memit.methods.sequential import AlphaEditSolve, edited_weights, key_outer_sums, null_energy, null_projector
from memit.methods.solver import solve_update
from memit.models.arch import as_math, get_arch
from memit.stats import second_moments

REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano"),
        memit.EditRequest("{} speaks", "Danielle", "French")]
PREFIXES = ["Because of it. ", "I said that the day was long. "]


def _hp(corpus_file, **kw):
    base = {"layers": [1, 2], "v_num_grad_steps": 4, "v_lr": 0.2, "prefixes": PREFIXES, "stats_corpus": corpus_file,
            "stats_tokens": 2048, "stats_seq_len": 32, "ft_steps": 3, "ft_lr": 1e-2}
    return MemitHyperParams.from_dict(base | kw)


def _c0(model, bpe, hp, layers):
    return second_moments(model, bpe, get_arch(model), layers, corpus=hp.stats_corpus, max_tokens=hp.stats_tokens,
                          seq_len=hp.stats_seq_len, progress=False)


def _spd_system(seed: int, n: int):
    """A random well-posed system: C₀ (16×16, positive definite), keys K (16×n), residuals R (8×n)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(16, 16, generator=g, dtype=torch.float64)
    c0 = a @ a.T / 16 + 0.1 * torch.eye(16, dtype=torch.float64)
    return g, c0, torch.randn(16, n, generator=g), torch.randn(8, n, generator=g)


def test_rome_solve_maps_the_averaged_key_to_the_target():
    _, c0, k, r = _spd_system(0, 1)
    upd = RomeSolve().solve(0, r, k, c0, 1.0).dense()
    torch.testing.assert_close(upd @ k.double(), r.double(), rtol=1e-10, atol=1e-10)


def test_rome_condition_is_found_once_per_statistics():
    _, c0, k, _ = _spd_system(0, 1)
    solve = RomeSolve()
    first = solve.condition(0, k, c0, 1.0)
    ev = torch.linalg.eigvalsh(c0)
    assert first == pytest.approx(float(ev[-1] / ev[0]))
    assert solve.condition(0, k, c0, 1.0) == first  # from the cache
    other = c0 + torch.eye(16, dtype=torch.float64)  # new statistics: found again
    assert solve.condition(0, k, other, 1.0) == pytest.approx(float((ev[-1] + 1) / (ev[0] + 1)))


def test_rome_edit_gives_w_hat_k_star_equal_v_star(bpe, corpus_file):
    """End to end on a tiny model: ΔW k* = v* − W k* with k* the prefix-averaged key."""
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    hp = _hp(corpus_file, layers=[2], clamp_norm_factor=4.0)
    d = edit(model, bpe, REQS[:1], hp, solver=RomeSolve(), apply=False, progress=False)
    k_star = d.aux["keys"][2]  # (d_ff, 1), averaged over the prefixed prompts
    _, h = compute_keys(model, bpe, arch, REQS[:1], 2, 2, PREFIXES, 4096)  # W k* part: current output
    dw = as_math(d.weights[arch.mlp_out_name(2) + ".weight"], arch)
    torch.testing.assert_close((dw.double() @ k_star.double()).T, (d.aux["targets"].z - h).double(),
                               rtol=1e-4, atol=1e-5)


def test_rome_is_sequential_and_exact_to_apply(bpe, corpus_file):
    model = tiny_model("llama", bpe)
    hp = _hp(corpus_file)
    before = {n: p.clone() for n, p in model.named_parameters()}
    d = run("rome", model, bpe, REQS, hp, progress=False)
    name = get_arch(model).mlp_out_name(hp.rome_layer()) + ".weight"
    assert list(d.weights) == [name] and len(d.meta["layers_info"]) == 3  # one rank-one update per request
    edited = model.get_parameter(name).clone()
    d.revert(model)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    d.apply(model)
    assert torch.equal(model.get_parameter(name), edited)  # the saved delta reproduces the edit exactly


def test_rome_targets_are_stored_for_the_same_sequence_only(bpe, corpus_file, tmp_path, monkeypatch):
    import memit.targets as targets_mod

    model = tiny_model("llama", bpe)
    hp = _hp(corpus_file)
    real, calls = targets_mod._optimise, []
    monkeypatch.setattr(targets_mod, "_optimise", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    first = run("rome", model, bpe, REQS, hp, progress=False, checkpoint=tmp_path)
    first.revert(model)
    again = run("rome", model, bpe, REQS, hp, progress=False, checkpoint=tmp_path)
    again.revert(model)
    assert len(calls) == 3  # the rerun optimised nothing
    assert all(torch.equal(again.weights[n], first.weights[n]) for n in first.weights)
    run("rome", model, bpe, REQS[::-1], hp, progress=False, checkpoint=tmp_path).revert(model)
    assert len(calls) == 6  # in another order each request meets another model: nothing stored applies


@pytest.mark.parametrize("method", ["ft", "ft-w"])
def test_ft_respects_its_bound(bpe, corpus_file, method):
    model = tiny_model("llama", bpe)
    hp = _hp(corpus_file, ft_norm_bound=1e-3)
    d = run(method, model, bpe, REQS, hp, progress=False)
    change = next(iter(d.weights.values())).abs().max()
    assert change > 0
    if method == "ft":
        assert change <= 1e-3 + 1e-7
    else:
        assert change > 1e-3  # lr 1e-2 for 3 steps: weight decay, not a box, limits FT-W
    assert not any(p.requires_grad for p in model.parameters())


def test_alphaedit_leaves_the_preserved_subspace_unchanged(bpe, corpus_file):
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    hp0 = _hp(corpus_file)
    c0 = _c0(model, bpe, hp0, [1, 2])
    ev = torch.linalg.eigvalsh(c0[2])
    hp = _hp(corpus_file, null_threshold=float(ev[len(ev) // 2]))  # half the directions are "preserved"
    prior = {layer: 0.5 * torch.eye(c.shape[0], dtype=torch.float64) for layer, c in c0.items()}
    d = run("alphaedit", model, bpe, REQS, hp, prior=prior, progress=False)
    for layer in (1, 2):
        evals, vecs = torch.linalg.eigh(c0[layer])
        kept = vecs[:, evals >= hp.alphaedit.null_threshold]  # P k = 0 for these keys
        dw = as_math(d.weights[arch.mlp_out_name(layer) + ".weight"], arch).double()
        assert dw.norm() > 1e-6
        assert (dw @ kept).abs().max() < 1e-9 * max(1.0, float(dw.abs().max()))
        assert d.meta["layers_info"][layer - 1]["null_dim"] == int((evals < hp.alphaedit.null_threshold).sum())


@pytest.mark.parametrize("method", ["memit-seq", "alphaedit"])
def test_sequential_methods_count_the_statistics_they_fetch(bpe, corpus_file, monkeypatch, method):
    """AlphaEdit finds its C₀ before the shared edit runs (MEMIT-seq within it); either way its time
    shows in the edit's timings."""
    import time

    import memit.methods.memit as shared
    import memit.methods.sequential as seq

    real = seq.stats_for

    def slow(*a, **k):
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(seq, "stats_for", slow)
    monkeypatch.setattr(shared, "stats_for", slow)
    d = run(method, tiny_model("llama", bpe), bpe, REQS[:1], _hp(corpus_file), progress=False)
    assert d.meta["timings"]["stats"] >= 0.3
    assert ("projector" in d.meta["timings"]) == (method == "alphaedit")


def test_alphaedit_solution_lies_in_the_null_space():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(12, 12, generator=g, dtype=torch.float64)
    c0 = a @ a.T / 12
    p = null_projector(c0, float(torch.linalg.eigvalsh(c0)[5]))
    k, r = torch.randn(12, 3, generator=g), torch.randn(6, 3, generator=g)
    upd = AlphaEditSolve({0: p}, None, 1.0).solve(0, r, k, c0, 1.0).dense()
    torch.testing.assert_close(upd @ p, upd, rtol=1e-9, atol=1e-12)


def test_null_space_by_energy_holds_at_most_that_share_of_the_key_energy():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(12, 40, generator=g, dtype=torch.float64) * torch.logspace(0, -2, 12, dtype=torch.float64)[:, None]
    c0 = a @ a.T / 40
    ev = torch.linalg.eigvalsh(c0)
    for share in (0.0, 1e-3, 0.05, 0.3):
        p = null_projector(c0, 0.0, energy=share)
        k = round(float(p.trace()))
        assert null_energy(p, c0) <= share + 1e-12
        assert float(ev[: k + 1].sum() / ev.sum()) > share  # one more direction would exceed it
        torch.testing.assert_close(null_energy(p, c0), float(ev[:k].sum() / ev.sum()))


def test_text_change_is_the_mean_square_output_change_over_the_keys():
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(500, 10, generator=g, dtype=torch.float64)  # tokens × d_ff
    w, dw = torch.randn(4, 10, generator=g, dtype=torch.float64), torch.randn(4, 10, generator=g, dtype=torch.float64)
    c0 = keys.T @ keys / len(keys)
    direct = float((keys @ dw.T).pow(2).sum(1).mean() / (keys @ w.T).pow(2).sum(1).mean())
    assert abs(text_change(dw, w, c0) - direct) < 1e-12


def test_memit_seq_adds_earlier_keys_to_the_preservation_term(bpe, corpus_file):
    model = tiny_model("llama", bpe)
    hp = _hp(corpus_file, layers=[2])
    plain = run("memit", model, bpe, REQS, hp, progress=False)
    plain.revert(model)
    seq0 = run("memit-seq", model, bpe, REQS, hp, prior=None, progress=False)
    seq0.revert(model)
    name = get_arch(model).mlp_out_name(2) + ".weight"
    assert torch.equal(seq0.weights[name], plain.weights[name])  # no earlier batches: plain MEMIT
    earlier = key_outer_sums(plain.aux["keys"])
    seq = run("memit-seq", model, bpe, REQS[:2], hp, prior=earlier, progress=False)
    # independently: Δ = R Kᵀ (λC₀ + K_pK_pᵀ + KKᵀ)⁻¹ with the same R and K
    k = seq.aux["keys"][2].double()
    lam = seq.meta["lambda"]
    c0 = _c0(model, bpe, hp, [2])[2]
    seq.revert(model)
    _, cur = compute_keys(model, bpe, get_arch(model), REQS[:2], 2, 2, PREFIXES, 4096)
    r = (seq.aux["targets"].z - cur).T.double()
    expected = r @ k.T @ torch.linalg.inv(lam * c0 + earlier[2] + k @ k.T)
    torch.testing.assert_close(as_math(seq.weights[name], get_arch(model)).double(), expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(expected, solve_update(r, k, c0, lam).dense())  # the earlier keys did change it
    # its text change is measured on C₀ alone, not on the augmented preservation matrix
    w = as_math(model.get_parameter(name), get_arch(model)).detach()
    got = seq.meta["layers_info"][0]["text_change"]
    assert got == pytest.approx(text_change(as_math(seq.weights[name], get_arch(model)), w, c0), rel=1e-6)


def test_encore_is_memit_seq_with_its_stopping_and_norm_term(bpe, corpus_file):
    """ENCORE added through the method interface: MEMIT-seq's solve with most-probable stopping
    (margin 0) and its ridge term, whatever the caller's own stop and ridge settings."""
    model = tiny_model("llama", bpe)
    hp = _hp(corpus_file, layers=[2], stop="paper", ridge=0.0, encore={"ridge": 0.5})
    name = get_arch(model).mlp_out_name(2) + ".weight"
    earlier = key_outer_sums(run("memit", model, bpe, REQS[2:], hp, progress=False).aux["keys"])
    model = tiny_model("llama", bpe)
    enc = run("encore", model, bpe, REQS[:2], hp, prior=earlier, progress=False)
    enc.revert(model)
    same = _hp(corpus_file, layers=[2], stop="margin", stop_margin=0.0, ridge=0.5)
    seq = run("memit-seq", model, bpe, REQS[:2], same, prior=earlier, progress=False)
    seq.revert(model)
    assert torch.equal(enc.weights[name], seq.weights[name])
    assert enc.meta["method"] == "encore" and enc.meta["hparams"]["ridge"] == 0.5
    assert enc.meta["hparams"]["stop"] == "margin" and enc.meta["hparams"]["stop_margin"] == 0.0
    plain = run("memit-seq", model, bpe, REQS[:2], hp, prior=earlier, progress=False)
    assert not torch.equal(plain.weights[name], enc.weights[name])  # its own settings did change the edit


def test_encore_in_a_sequence_pulls_each_batch_back_toward_the_original_weights(bpe, corpus_file):
    """Given the sequence's original weights, ENCORE's norm term is on W + ΔW − W₀, as in its paper:
    batch 2 solves Δ(λC₀ + K_pK_pᵀ + μI + KKᵀ) = RKᵀ − μ(W₁ − W₀), μ the ridge weight. On a
    first edit (W = W₀) that is the plain ridge term, bit for bit."""
    model = tiny_model("llama", bpe)
    hp = _hp(corpus_file, layers=[2], rounds=1, encore={"ridge": 0.5})
    arch = get_arch(model)
    name = arch.mlp_out_name(2) + ".weight"
    base = edited_weights(model, hp)
    first = run("encore", model, bpe, REQS[2:], hp, base=base, progress=False)
    first.revert(model)
    plain = run("encore", model, bpe, REQS[2:], hp, progress=False)  # stays applied: W₁
    assert torch.equal(first.weights[name], plain.weights[name])
    prior, w1 = key_outer_sums(plain.aux["keys"]), model.get_parameter(name).detach().clone()
    second = run("encore", model, bpe, REQS[:2], hp, prior=prior, base=base, progress=False)
    second.revert(model)
    k, lam, c0 = second.aux["keys"][2].double(), second.meta["lambda"], _c0(model, bpe, hp, [2])[2]
    _, cur = compute_keys(model, bpe, arch, REQS[:2], 2, 2, PREFIXES, 4096)
    r = (second.aux["targets"].z - cur).T.double()
    mu = lam * 0.5 * float(c0.trace()) / c0.shape[0]
    a = lam * c0 + prior[2] + mu * torch.eye(c0.shape[0], dtype=torch.float64) + k @ k.T
    drift = as_math(w1.double() - base[name].double(), arch)
    expected = (r @ k.T - mu * drift) @ torch.linalg.inv(a)
    torch.testing.assert_close(as_math(second.weights[name], arch).double(), expected, rtol=1e-4, atol=1e-6)
    unanchored = run("encore", model, bpe, REQS[:2], hp, prior=prior, progress=False)
    assert not torch.allclose(as_math(unanchored.weights[name], arch).double(), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_every_method_runs_on_every_family(bpe, corpus_file, model_type):
    model = tiny_model(model_type, bpe)
    hp = _hp(corpus_file, v_num_grad_steps=2, ft_steps=1)
    before = {n: p.clone() for n, p in model.named_parameters()}
    for method in METHODS:
        d = run(method, model, bpe, REQS[:2], hp, progress=False)
        assert d.meta["method"] == method and d.weights
        assert all(torch.isfinite(w).all() for w in d.weights.values())
        if method in ("memit", "emmet", "memit-seq", "encore", "alphaedit"):  # the C₀-based ones say how much text moved
            assert all(info["text_change"] > 0 for info in d.meta["layers_info"]), method
        d.revert(model)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters()), method


@pytest.mark.parametrize("method", ["memit", "rome", "ft"])
def test_a_model_in_training_mode_with_gradients_edits_as_in_eval_mode(bpe, corpus_file, method):
    """What ``from_pretrained`` and a training loop leave: every weight asks for gradients, and
    GPT-2's dropout is on. The edit must not optimise through dropout, nor leave gradients behind,
    and the model's own mode and flags come back."""
    hp = _hp(corpus_file)
    plain = tiny_model("gpt2", bpe)
    expected = run(method, plain, bpe, REQS[:2], hp, progress=False)
    user = tiny_model("gpt2", bpe).train().requires_grad_(True)
    user.transformer.h[0].mlp.c_fc.requires_grad_(False)  # a flag of the user's own, kept as it was
    got = run(method, user, bpe, REQS[:2], hp, progress=False)
    for name, w in expected.weights.items():
        torch.testing.assert_close(got.weights[name], w, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in user.parameters())
    assert all(m.training for m in user.modules())
    assert [n for n, p in user.named_parameters() if not p.requires_grad] == [
        "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.bias"]
    got.revert(user)
    got = memit.edit(user, bpe, REQS[:2], hp, progress=False)  # the public entry point alone
    assert all(p.grad is None for p in user.parameters()) and all(m.training for m in user.modules())


def test_emmet_meets_every_edit_exactly_and_is_rome_for_one():
    from memit.methods.rome import EmmetSolve

    g, c0, k, r = _spd_system(2, 4)
    upd = EmmetSolve().solve(0, r, k, c0, 1.0).dense()
    torch.testing.assert_close(upd @ k.double(), r.double(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(EmmetSolve().solve(0, r[:, :1], k[:, :1], c0, 1.0).dense(),
                               RomeSolve().solve(0, r[:, :1], k[:, :1], c0, 1.0).dense())
    # the smallest such change in the C₀ metric: any other solution ΔW + N (N K = 0) is larger
    null = torch.randn(8, 16, generator=g, dtype=torch.float64)
    null = null - null @ k.double() @ torch.linalg.pinv(k.double())  # N K = 0
    def cost(d):
        return float(torch.trace(d @ c0 @ d.T))
    assert cost(upd) < cost(upd + 0.1 * null)
