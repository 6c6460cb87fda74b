"""The closed-form update against an independent numpy solution of the normal equations."""

import numpy as np
import pytest
import torch

from memit.methods.memit import solve_update


def test_update_matches_numpy_normal_equations():
    rng = np.random.default_rng(0)
    d_model, d_ff, n, lam = 7, 12, 5, 3.0
    keys = rng.normal(size=(d_ff, n))
    resid = rng.normal(size=(d_model, n))
    x = rng.normal(size=(d_ff, 40))
    c0 = x @ x.T / 40
    # Δ minimises ‖ΔK − R‖² + λ tr(Δ C₀ Δᵀ): normal equations Δ (λC₀ + KKᵀ) = R Kᵀ.
    expected = np.linalg.solve((lam * c0 + keys @ keys.T).T, (resid @ keys.T).T).T
    got = solve_update(torch.tensor(resid), torch.tensor(keys), torch.tensor(c0), lam)
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
    upd = solve_update(resid, keys, c0, 1e-9)
    torch.testing.assert_close(upd @ keys, resid, rtol=1e-6, atol=1e-6)


def test_condition_number_and_warning():
    import warnings

    from memit.methods.memit import condition_number

    c0 = torch.diag(torch.tensor([1.0, 1e-3, 1e-6], dtype=torch.float64))
    keys = torch.zeros(3, 1, dtype=torch.float64)
    assert condition_number(keys, c0, 2.0) == pytest.approx(1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        condition_number(keys, c0, 1.0)  # computing it never warns by itself
