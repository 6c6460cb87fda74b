"""The closed-form update against an independent numpy solution of the normal equations."""

import numpy as np
import pytest
import torch

from memit.methods.solver import solve_update


def test_update_matches_numpy_normal_equations():
    rng = np.random.default_rng(0)
    d_model, d_ff, n, lam = 7, 12, 5, 3.0
    keys = rng.normal(size=(d_ff, n))
    resid = rng.normal(size=(d_model, n))
    x = rng.normal(size=(d_ff, 40))
    c0 = x @ x.T / 40
    # Δ minimises ‖ΔK − R‖² + λ tr(Δ C₀ Δᵀ): normal equations Δ (λC₀ + KKᵀ) = R Kᵀ.
    expected = np.linalg.solve((lam * c0 + keys @ keys.T).T, (resid @ keys.T).T).T
    got = solve_update(torch.tensor(resid), torch.tensor(keys), torch.tensor(c0), lam).dense()
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-11)
    # and it satisfies the normal equations themselves
    lhs = got.numpy() @ (lam * c0 + keys @ keys.T)
    np.testing.assert_allclose(lhs, resid @ keys.T, rtol=1e-9, atol=1e-10)


def test_small_lambda_reaches_the_values():
    rng = np.random.default_rng(1)
    keys = torch.tensor(rng.normal(size=(16, 3)))
    resid = torch.tensor(rng.normal(size=(4, 3)))
    c0 = torch.eye(16, dtype=torch.float64)
    upd = solve_update(resid, keys, c0, 1e-9).dense()
    torch.testing.assert_close(upd @ keys, resid, rtol=1e-6, atol=1e-6)


def test_condition_number_and_warning():
    import warnings

    from memit.diagnostics import condition_number

    c0 = torch.diag(torch.tensor([1.0, 1e-3, 1e-6], dtype=torch.float64))
    keys = torch.zeros(3, 1, dtype=torch.float64)
    assert condition_number(keys, c0, 2.0) == pytest.approx(1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        condition_number(keys, c0, 1.0)  # computing it never warns by itself


def _edit_one_layer(bpe, corpus_file, preservation, lam):
    import memit
    from helpers import tiny_model
    from memit.hparams import MemitHyperParams
    from memit.keys import compute_keys
    from memit.methods.memit import edit
    from memit.models.arch import as_math, get_arch

    reqs = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
            memit.EditRequest("{} speaks", "Danielle", "French")]
    model = tiny_model("gpt2", bpe)
    arch = get_arch(model)
    hp = MemitHyperParams(layers=[2], lam=lam, preservation=preservation, v_num_grad_steps=3, v_lr=0.2,
                          prefixes=["I said. "], stats_corpus=corpus_file, stats_tokens=1024, stats_seq_len=32)
    d = edit(model, bpe, reqs, hp, apply=False, progress=False)
    _, cur = compute_keys(model, bpe, arch, reqs, 2, 2, hp.prefixes, 4096)
    r = (d.aux["targets"].z - cur).T.double().numpy()
    k = d.aux["keys"][2].double().numpy()
    dw = as_math(d.weights[arch.mlp_out_name(2) + ".weight"], arch).double().numpy()
    return dw, r, k


def test_identity_preservation_is_plain_ridge(bpe, corpus_file):
    import numpy as np

    dw, r, k = _edit_one_layer(bpe, corpus_file, "identity", 0.7)
    expected = r @ k.T @ np.linalg.inv(0.7 * np.eye(k.shape[0]) + k @ k.T)  # independent numpy ridge
    np.testing.assert_allclose(dw, expected, rtol=1e-4, atol=1e-6)


def test_no_preservation_is_the_minimum_norm_solution(bpe, corpus_file):
    import numpy as np

    dw, r, k = _edit_one_layer(bpe, corpus_file, "none", 123.0)  # λ is ignored: it is 0
    np.testing.assert_allclose(dw @ k, r, rtol=1e-4, atol=1e-5)  # the edits are met exactly
    np.testing.assert_allclose(dw, r @ np.linalg.pinv(k), rtol=1e-4, atol=1e-6)  # with the smallest ‖ΔW‖


def test_update_overlap_and_spectrum_by_hand():
    from memit.diagnostics import spectrum, update_overlap

    c0 = torch.eye(3, dtype=torch.float64)
    keys = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # columns are the keys
    # with C₀ = I and λ = 1: directions (I + KKᵀ)⁻¹K, computed independently
    a = torch.eye(3, dtype=torch.float64) + keys.double() @ keys.double().T
    dirs = torch.linalg.inv(a) @ keys.double()
    cos = torch.nn.functional.normalize(dirs, dim=0).T @ torch.nn.functional.normalize(dirs, dim=0)
    expected = [max(abs(float(cos[i, j])) for j in range(3) if j != i) for i in range(3)]
    got = update_overlap(keys, c0, 1.0)
    assert got["per_request"] == pytest.approx(expected)
    assert got["max"] == pytest.approx(max(expected)) and got["mean"] == pytest.approx(sum(expected) / 3)
    assert expected[2] == pytest.approx(0.0, abs=1e-12)  # the third key is orthogonal to the others
    spec = spectrum(keys[:, :2], c0, 1.0)  # two keys in three dimensions: KKᵀ is singular
    assert spec["rank_kk"] == 2 and spec["cond_kk"] == float("inf")
    assert spec["cond"] == pytest.approx(float(spec["eig"][-1] / spec["eig"][0]))


def test_ridge_matched_norm_is_plain_ridge_at_the_lambda_that_gives_the_norm():
    from memit.methods.ridge import RidgeMatchNorm

    rng = np.random.default_rng(2)
    keys, resid = rng.normal(size=(12, 5)), rng.normal(size=(7, 5))
    full = resid @ np.linalg.pinv(keys)  # the largest ridge change (λ → 0)
    want = 0.3 * np.linalg.norm(full)
    solve = RidgeMatchNorm({4: want})
    got = solve.solve(4, torch.tensor(resid), torch.tensor(keys), torch.eye(12, dtype=torch.float64), 99.0).dense().numpy()
    lam = solve.lams[4]
    assert np.linalg.norm(got) == pytest.approx(want, rel=1e-9)
    expected = resid @ keys.T @ np.linalg.inv(lam * np.eye(12) + keys @ keys.T)  # independent numpy ridge
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10)
    assert solve.condition(4, torch.tensor(keys), None, 0.0) == pytest.approx(
        np.linalg.cond(lam * np.eye(12) + keys @ keys.T), rel=1e-6)
    # a budget above the minimum-norm change cannot be spent: λ = 0, the edits met exactly
    big = RidgeMatchNorm({4: 10 * np.linalg.norm(full)})
    np.testing.assert_allclose(big.solve(4, torch.tensor(resid), torch.tensor(keys), None, 1.0).dense().numpy(), full, atol=1e-9)
    assert big.lams[4] == 0.0


def test_identity_edit_matches_the_norm_of_a_reference_edit(bpe, corpus_file):
    import memit
    from helpers import tiny_model
    from memit.hparams import MemitHyperParams
    from memit.methods.memit import edit

    reqs = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
            memit.EditRequest("{} speaks", "Danielle", "French")]
    model = tiny_model("llama", bpe)
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, v_lr=0.2, prefixes=["I said. "],
                          stats_corpus=corpus_file, stats_tokens=1024, stats_seq_len=32)
    ref = edit(model, bpe, reqs, hp, apply=False, progress=False)
    # half the reference's change: a C₀-weighted edit can be larger than ridge's largest (λ → 0)
    rel = [0.5 * x["delta_rel_norm"] for x in ref.meta["layers_info"]]
    hp.preservation, hp.match_rel_norms = "identity", rel
    got = edit(model, bpe, reqs, hp, apply=False, progress=False, targets=ref.aux["targets"])
    info = got.meta["layers_info"]
    assert [x["delta_rel_norm"] for x in info] == pytest.approx(rel, rel=1e-4)
    assert all(x["lambda"] > 0 for x in info)
    assert not torch.allclose(next(iter(got.weights.values())), next(iter(ref.weights.values())))  # another direction


def test_memit_solve_builds_each_layer_system_once(monkeypatch):
    """solve, condition and the full diagnostics of one layer share one system: one eigendecomposition
    and one solve, with the same figures as the diagnostics computed on their own."""
    from memit import diagnostics
    from memit.methods.solver import MemitSolve

    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(12, 40)))
    c0, keys, resid, lam = x @ x.T / 40, torch.tensor(rng.normal(size=(12, 4))), torch.tensor(rng.normal(size=(5, 4))), 2.0
    calls = {"eigvalsh": 0, "solve": 0}
    eigvalsh, solve = torch.linalg.eigvalsh, torch.linalg.solve

    def counted(name, fn):
        def f(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return f

    monkeypatch.setattr(torch.linalg, "eigvalsh", counted("eigvalsh", eigvalsh))
    monkeypatch.setattr(torch.linalg, "solve", counted("solve", solve))
    s = MemitSolve(ridge=0.5)
    got = s.solve(3, resid, keys, c0, lam).dense()
    cond = s.condition(3, keys, c0, lam)
    info = s.layer_info(3, keys, c0, lam, full=True)
    assert calls == {"eigvalsh": 2, "solve": 1}  # the system's and KKᵀ's eigenvalues, one solve
    monkeypatch.setattr(torch.linalg, "eigvalsh", eigvalsh)
    monkeypatch.setattr(torch.linalg, "solve", solve)
    c = s.system_c0(3, c0, lam)
    torch.testing.assert_close(got, solve_update(resid, keys, c, lam).dense(), rtol=0, atol=0)
    spec, overlap = diagnostics.spectrum(keys, c, lam), diagnostics.update_overlap(keys, c, lam)
    assert cond == pytest.approx(spec["cond"], rel=1e-12)
    assert s.spectra[3]["eig"] == pytest.approx(spec["eig"], rel=1e-12)
    assert info["rank_kk"] == spec["rank_kk"] and info["update_overlap"]["max"] == pytest.approx(overlap["max"])
    s.solve(4, resid, keys, c0, lam)  # another layer gets its own system
    assert s._sys["layer"] == 4 and "eig" not in s._sys
