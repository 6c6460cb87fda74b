"""The method registry and the Solver interface: one list that the CLI and the docs follow, a
closed-form method added by writing one Solver, and diagnostics that cost only when asked for."""

import re
from pathlib import Path

import pytest
import torch

import memit
from helpers import tiny_model
from memit.cli import build_parser
from memit.hparams import MemitHyperParams
from memit.lowrank import LowRank
from memit.methods import METHODS, Method, run
from memit.methods.memit import EditError, edit
from memit.methods.solver import MemitSolve, Solver, solve_update

ROOT = Path(__file__).resolve().parents[1]
REQS = [memit.EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome"),
        memit.EditRequest("Everyone knows {} plays the", "Toko Yasuda", "piano")]


def _hp(**kw):
    return MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, prefixes=["Because of it. "], lam=2.0, **kw)


def _stats():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(64, 64, generator=g, dtype=torch.float64)
    return {layer: a @ a.T / 64 + 0.1 * torch.eye(64, dtype=torch.float64) for layer in range(4)}


def test_docs_table_and_cli_list_exactly_the_registered_methods():
    table = (ROOT / "docs" / "methods.md").read_text().split("| method |", 1)[1].split("\n\n", 1)[0]
    assert re.findall(r"^\| `([a-z-]+)`", table, re.MULTILINE) == list(METHODS)
    edit_cmd = next(a for a in build_parser()._subparsers._group_actions[0].choices["edit"]._actions
                    if "--method" in a.option_strings)
    assert list(edit_cmd.choices) == list(METHODS)
    assert all(isinstance(m, Method) and m.summary for m in METHODS.values())


class HalfMemit(Solver):
    """A new closed-form method in a few lines: MEMIT's update, halved."""
    name = "half-memit"

    def solve(self, layer, resid, keys, c0, lam):
        full = solve_update(resid, keys, c0, lam)
        return LowRank(full.left / 2, full.right)


def test_a_solver_is_all_a_new_closed_form_method_needs(bpe):
    model = tiny_model("llama", bpe)
    stats = _stats()
    targets = edit(model, bpe, REQS, _hp(), stats=stats, apply=False, progress=False).aux["targets"]
    d_memit = edit(model, bpe, REQS, _hp(), stats=stats, targets=targets, apply=False, progress=False)
    d_half = edit(model, bpe, REQS, _hp(), stats=stats, targets=targets, solver=HalfMemit(), apply=False,
                  progress=False)
    assert d_half.meta["method"] == "half-memit"
    first = next(iter(d_memit.weights))  # the first layer sees the same keys: exactly half the change there
    torch.testing.assert_close(d_half.weights[first], d_memit.weights[first] / 2)
    assert all(info["cond"] is None for info in d_half.meta["layers_info"])  # the interface's default


def test_full_diagnostics_add_the_spectra_and_change_no_weight(bpe):
    stats = _stats()
    cheap = edit(tiny_model("llama", bpe), bpe, REQS, _hp(), stats=stats, apply=False, progress=False)
    full = edit(tiny_model("llama", bpe), bpe, REQS, _hp(diagnostics="full"), stats=stats, apply=False,
                progress=False)
    assert all(torch.equal(cheap.weights[n], full.weights[n]) for n in cheap.weights)
    for c, f in zip(cheap.meta["layers_info"], full.meta["layers_info"]):
        assert c["cond"] == pytest.approx(f["cond"]) and c["text_change"] == f["text_change"]
        assert "update_overlap" not in c and "rank_kk" not in c
        assert f["rank_kk"] == 2 and 0 <= f["update_overlap"]["max"] <= 1
    assert cheap.aux["spectra"] == {} and sorted(full.aux["spectra"]) == [1, 2]
    assert all(r["max_update_overlap"] is None for r in cheap.meta["requests"])
    assert all(r["max_update_overlap"] is not None for r in full.meta["requests"])
    with pytest.raises(EditError, match="diagnostics must be cheap or full"):
        edit(tiny_model("llama", bpe), bpe, REQS, _hp(diagnostics="some"), stats=stats, progress=False)


def test_memit_seq_is_memit_with_the_earlier_keys_in_its_system(bpe):
    """MemitSolve's prior enters as λC₀ + K_pK_pᵀ: checked against the formula written out."""
    g = torch.Generator().manual_seed(3)
    c0 = _stats()[1]
    keys, resid, kp = (torch.randn(64, 3, generator=g, dtype=torch.float64),
                       torch.randn(32, 3, generator=g, dtype=torch.float64),
                       torch.randn(64, 5, generator=g, dtype=torch.float64))
    got = MemitSolve(prior={1: kp @ kp.T}).solve(1, resid, keys, c0, 2.0).dense()
    want = resid @ keys.T @ torch.linalg.inv(2.0 * c0 + kp @ kp.T + keys @ keys.T)
    torch.testing.assert_close(got, want)


def test_unknown_method_is_refused_by_name(bpe):
    with pytest.raises(ValueError, match="unknown method 'nope'; known: memit, rome, ft, ft-w, emmet"):
        run("nope", tiny_model("llama", bpe), bpe, REQS, _hp())


def test_method_settings_are_groups_that_read_the_older_flat_names():
    from memit.hparams import FtConfig

    hp = MemitHyperParams.from_dict({"layers": [1], "ft": {"lr": 0.25}, "null_threshold": 1e-3, "ft_steps": 7})
    assert hp.ft == FtConfig(lr=0.25, steps=7) and hp.alphaedit.null_threshold == 1e-3
    assert hp.to_dict()["ft"] == {"lr": 0.25, "steps": 7, "norm_bound": 5e-4, "weight_decay": 0.5}
    assert MemitHyperParams.from_dict(hp.to_dict()) == hp
    assert hp.with_changes({"rome_clamp_norm_factor": 2.0}).rome.clamp_norm_factor == 2.0 and hp.rome.clamp_norm_factor == 4.0
    assert hp.with_changes({"ft": {"norm_bound": 1e-3}}).ft == FtConfig(lr=0.25, steps=7, norm_bound=1e-3)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\): ft.rate, lr"):
        MemitHyperParams.from_dict({"ft": {"rate": 1.0}, "lr": 1.0})
