"""Per-fact stopping: the paper's rule is reproduced exactly, and the margin rule stops each
request where its prediction says it should."""

import pytest
import torch

import memit
from golden.make_paper_loop import PREFIXES, REQS, golden_case
from golden.make_paper_loop import __file__ as golden_script
from helpers import tiny_model
from memit.files import load_tensors
from memit.hparams import MemitHyperParams
from memit.models.arch import get_arch
from memit.targets import compute_targets

GOLDEN = load_tensors(golden_script.replace("make_paper_loop.py", "paper_loop.safetensors"))[0]


def test_paper_rule_reproduces_the_loop_before_per_fact_stopping():
    model, tok, hp, stats = golden_case()
    assert hp.stop == "paper"
    t = compute_targets(model, tok, get_arch(model), REQS, 2, PREFIXES, hp, progress=False)
    assert t.steps == GOLDEN["steps"].tolist() and len(set(t.steps)) > 1  # some stopped by loss, some at the cap
    assert t.stop == ["loss" if s == 1 else "cap" for s in t.steps]
    torch.testing.assert_close(t.z, GOLDEN["z"], rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(t.loss, dtype=torch.float64), GOLDEN["loss"], rtol=1e-6, atol=0)
    delta = memit.edit(model, tok, REQS, hp, stats=stats, apply=False, progress=False)
    for name, d in delta.weights.items():
        torch.testing.assert_close(d, GOLDEN[f"delta.{name}"], rtol=0, atol=1e-6)


def _margins_by_hand(model, tok, arch, req, z_layer, prefixes, delta):
    """The smallest margin of the target tokens over the request's prompt rows, with ``delta``
    added at the subject's last token of block ``z_layer``: a plain full forward pass per row."""
    from memit import hooks
    from memit.tokens import encode_filled

    worst = float("inf")
    for p in ["", *prefixes]:
        e = encode_filled(tok, req.prompt, req.subject, req.target_new, prefix=p)

        def add(o, e=e):
            return o.index_put((torch.tensor([0]), torch.tensor([e.subject_last])), o[0, e.subject_last] + delta)

        with hooks.edit_output(model, arch.block_name(z_layer), add):
            lp = torch.log_softmax(model(input_ids=torch.tensor([e.ids])).logits[0].float(), -1)
        for q, t in zip(e.target_positions, e.ids[e.n_prompt:]):
            others = lp[q].clone()
            others[t] = -float("inf")
            worst = min(worst, float(lp[q, t] - others.max()))
    return worst


def test_margin_stop_records_reason_steps_and_margin(bpe):
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    hp = MemitHyperParams(v_num_grad_steps=6, v_lr=0.5, clamp_norm_factor=0.05, stop="margin", v_loss_threshold=0.0)
    first = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)
    assert all(s == "plateau" or s == "cap" for s in first.stop)  # a random model: no margin is positive
    # a margin each request has at its start stops it there: one forward pass, no step taken
    hp.stop_margin = min(first.margin) - 10
    t = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)
    assert t.stop == ["margin"] * 3 and t.steps == [1, 1, 1]
    torch.testing.assert_close(t.z, t.h)
    # the margin the loop reports is the one a plain forward pass with the final δ gives
    for j, r in enumerate(REQS):
        assert first.margin[j] == pytest.approx(
            _margins_by_hand(model, bpe, arch, r, 2, PREFIXES, first.z[j] - first.h[j]), abs=1e-4)


def test_margin_stop_splits_requests_and_the_stop_is_per_request(bpe):
    model = tiny_model("llama", bpe)
    arch = get_arch(model)
    hp = MemitHyperParams(v_num_grad_steps=1, stop="margin", v_loss_threshold=0.0, plateau_steps=100)
    start = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False).margin
    hp.v_num_grad_steps, hp.stop_margin = 5, sorted(start)[1] + 1e-6  # one request has it from the start
    t = compute_targets(model, bpe, arch, REQS, 2, PREFIXES, hp, progress=False)
    top = start.index(max(start))
    assert t.stop[top] == "margin" and t.steps[top] == 1
    assert all(t.steps[j] > 1 for j in range(3) if t.stop[j] != "margin")
    assert set(t.stop) <= {"margin", "cap"}


def test_plateau_stops_a_clamped_delta_that_does_not_improve(bpe):
    model = tiny_model("llama", bpe)
    hp = MemitHyperParams(v_num_grad_steps=25, v_lr=0.5, clamp_norm_factor=0.01, stop="margin", stop_margin=5.0,
                          v_loss_threshold=0.0, plateau_steps=3, plateau_gain=1.0)
    t = compute_targets(model, bpe, get_arch(model), REQS, 2, PREFIXES, hp, progress=False)
    assert t.stop == ["plateau"] * 3 and all(t.clamped)
    assert all(s < 25 for s in t.steps)
    hp.stop = "paper"  # the paper's rule has no plateau: the same requests run to the cap
    assert compute_targets(model, bpe, get_arch(model), REQS, 2, PREFIXES, hp, progress=False).steps == [25] * 3


def test_stop_summary_counts_steps_over_every_round_and_each_rule():
    from memit.stopping import stop_summary

    reqs = [{"steps": 4, "steps_total": 11, "stop": "margin"}, {"steps": 25, "stop": "cap"},  # no rounds: steps
            {"steps": 6, "steps_total": 6, "stop": "margin"}]
    assert stop_summary(reqs) == {"mean_steps": 14.0, "stopped_by": {"margin": 2, "loss": 0, "plateau": 0, "cap": 1}}
