"""The result pages are what their committed result files make: a stale page or a report script
that breaks on a new file fails here, not at the end of a long run."""

import importlib
from pathlib import Path

import pytest

from helpers import benchmark_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _benchmarks_on_path(monkeypatch):
    """The page modules are imported as the scripts in benchmarks/ import them."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


def _pages(name: str):
    return importlib.import_module(f"pages.{name}")


@pytest.mark.parametrize("blocks, doc", [("results", "results.md"), ("review", "review.md")])
def test_page_matches_its_result_files(blocks, doc):
    text = (ROOT / "docs" / doc).read_text()
    filled, _ = _pages("page").fill(text, _pages(blocks).BLOCKS)
    assert filled == text, (
        f"docs/{doc} is stale: run `python benchmarks/{'report' if blocks == 'results' else 'review'}.py"
        f"{' report' if blocks == 'review' else ''}`")


@pytest.mark.parametrize("blocks, doc", [("results", "results.md"), ("review", "review.md")])
def test_every_figure_a_page_shows_can_be_drawn(blocks, doc, tmp_path):
    """The figures are drawn in their own step; here into a temporary folder, never over a committed PNG."""
    _, figures = _pages("page").fill((ROOT / "docs" / doc).read_text(), _pages(blocks).BLOCKS)
    assert figures
    for i, f in enumerate(figures):
        assert f.path.is_file(), f"{f.path} is shown by docs/{doc} but not committed"
        f.draw(out=tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000


def test_fill_recomputes_only_the_blocks_and_refuses_markers_that_do_not_match(tmp_path):
    page = _pages("page")
    fig = page.Figure(ROOT / "benchmarks" / "results" / "x.png", lambda out: None, "x")
    blocks = {"a": lambda: ["new", "", fig], "b": list}
    text = ("# Title\n\nHand-written prose (2026-12-03).\n\n<!-- generated: a -->\nold\n<!-- end: a -->\n"
            "Between.\n<!-- generated: b -->\nstale\n<!-- end: b -->\nEnd.\n")
    filled, figures = page.fill(text, blocks)
    assert filled == ("# Title\n\nHand-written prose (2026-12-03).\n\n<!-- generated: a -->\nnew\n\n"
                      "![x](../benchmarks/results/x.png)\n<!-- end: a -->\nBetween.\n<!-- generated: b -->\n"
                      "<!-- end: b -->\nEnd.\n")
    assert figures == [fig]
    assert page.fill(filled, blocks)[0] == filled
    with pytest.raises(ValueError, match="not shown b"):
        page.fill(text.replace("generated: b", "generated: c").replace("end: b", "end: c"), blocks)
    with pytest.raises(ValueError, match="unknown c"):
        page.fill(text + "<!-- generated: c -->\n<!-- end: c -->\n", blocks)
    with pytest.raises(ValueError, match="shown twice a"):
        page.fill(text + "<!-- generated: a -->\n<!-- end: a -->\n", blocks)
    doc = tmp_path / "page.md"
    doc.write_text(text)
    drawn = []
    fig.draw = lambda out: drawn.append(out)
    assert page.build(doc, blocks) == doc.read_text() == filled and drawn == [fig.path]


def test_retention_verdict_names_the_first_n_well_below():
    review = _pages("review")

    def kept(k, lo, hi):
        return {"kept": k, "kept_ci95": [lo, hi]}

    rows = [{"n": 100, "retention": kept(92.0, 88, 95)}, {"n": 1000, "retention": kept(60.0, 55, 65)}]
    seq = {"method": "memit", "hparams": {}, "batch_size": 100, "points": [
        {"edits": 0, "retention": kept(100.0, 100, 100)},
        {"edits": 100, "retention": kept(91.0, 87, 94)},   # interval reaches above 90: not yet
        {"edits": 200, "retention": kept(85.0, 80, 89)}]}  # first whose whole interval is under 90
    text = review.retention_verdict(rows, [seq])[0]
    assert "well below from N = 1,000" in text
    assert "well below from 200 edits" in text and "85.0 % after 200" in text
    calm = review.retention_verdict([{"n": 100, "retention": kept(92.0, 88, 95)}], [])[0]
    assert "not well below" in calm


def test_a_run_stopped_on_purpose_counts_as_finished():
    seq = _pages("sequential")

    def run(method, edits, stats="current"):
        return {"method": method, "n": 2000, "batch_size": 100, "hparams": {"sequential_stats": stats},
                "points": [{"edits": e, "perplexity": 30.0 + e / 10} for e in range(0, edits + 1, 100)]}

    stop = seq.STOPPED["alphaedit"][0]
    assert seq.finished(run("alphaedit", stop)) and not seq.finished(run("alphaedit", stop - 100))
    assert not seq.finished(run("alphaedit", stop, stats="base"))  # the paper's AlphaEdit goes to the end
    assert not seq.finished(run("memit", 1000)) and seq.finished(run("memit", 2000))
    assert f"perplexity {30 + stop / 10:.1f} against 30.0" in seq.stopped_note(run("alphaedit", stop))
    assert seq.stopped_note(run("alphaedit", stop - 100)) is None and seq.stopped_note(run("memit", 2000)) is None


def test_sweep_runs_only_what_is_missing_and_stamps_each_run(tmp_path, monkeypatch):
    """The tuning sweeps resume across sessions and machines: a rerun must not redo (or restamp)
    finished configurations, and each new one carries the machine it ran on."""
    sweep = benchmark_script("sweep")
    ran = []

    class FakeDelta:
        def __init__(self):
            self.meta = {"layers_info": [{"delta_rel_norm": 0.1, "max_abs_change": 0.01}], "timings": {"targets": 1.0},
                         "requests": [{"steps": 4, "stop": "margin"}, {"steps": 2, "stop": "cap"}]}

        def revert(self, model):
            ran.append("reverted")

    class HP:
        def with_changes(self, changes):
            return changes

    def fake_run(method, model, tok, reqs, hp, checkpoint=None):
        ran.append((method, hp["ft_lr"]))
        return FakeDelta()

    monkeypatch.setattr(sweep.memit, "load_model", lambda name: ("model", "tok"))
    monkeypatch.setattr(sweep.memit, "load_cases", lambda data, n: [])
    monkeypatch.setattr(sweep, "preset_for", lambda name: HP())
    monkeypatch.setattr(sweep, "run", fake_run)
    monkeypatch.setattr(sweep, "score", lambda model, tok, cases: {k: 1.0 for k in ("ES", "PS", "NS", "Score", "perplexity")})
    monkeypatch.setattr(sweep, "machine", lambda: {"cpu": "here", "commit": "abc"})
    configs = {"a": ("ft", {"ft_lr": 2.0}), "b": ("ft-w", {"ft_lr": 3.0})}
    file = tmp_path / "tune.json"
    old = {"method": "ft", "changes": {}, "edited": {}, "machine": {"cpu": "elsewhere"}}
    results = {"runs": {"a": old}, "unedited": {"ES": 0.0}, "machine": {"cpu": "first"}}
    sweep.measure(configs, results, 5, file, checkpoint=None)
    assert ran == [("ft-w", 3.0), "reverted"]
    saved = __import__("json").loads(file.read_text())
    assert saved["runs"]["a"] == old and saved["runs"]["b"]["machine"] == {"cpu": "here", "commit": "abc"}
    assert saved["machine"] == {"cpu": "first"}  # the file's own stamp stays the unedited measurement's
    ran.clear()
    sweep.measure(configs, saved, 5, file)  # nothing left: the model is not even loaded
    assert ran == []


def test_target_verdict_reads_the_last_point_against_the_unedited_one():
    seq = _pages("sequential")

    def run(method, es, ns):
        return {"method": method, "hparams": {}, "points": [{"edits": 0, "ES": 30.0, "NS": 70.0, "perplexity": 30.0},
                                                           {"edits": 2000, "ES": es, "NS": ns, "perplexity": 40.0}]}

    text = seq.target_verdict([run("alphaedit", 98.5, 61.0), run("memit", 99.0, 59.0)])
    assert "alphaedit: ES 98.5, NS 61.0 against 70.0 unedited (9.0 below), perplexity 40.0 — target met" in text
    assert "memit: ES 99.0, NS 59.0 against 70.0 unedited (11.0 below), perplexity 40.0 — target missed" in text
    assert seq.target_verdict([{**run("memit", 99.0, 69.0), "points": [{"edits": 0}, {"edits": 1000}]}]) is None


def test_edit_age_reads_es_of_each_quarter_in_edit_order():
    methods = _pages("methods")

    def case(new_wins):  # one rewrite prompt: NLL of target_new below target_true when the edit holds
        return {"rewrite": [{"new": 1.0, "true": 2.0} if new_wins else {"new": 2.0, "true": 1.0}],
                "paraphrase": [], "neighborhood": []}

    # ROME forgets its oldest edits: 0, 1, 2, 3 of each quarter of 4 requests hold.
    rome = [case(j < i) for i in range(4) for j in range(4)]
    runs = [{"method": "rome", "n": 16, "per_case": {"edited": rome}},
            {"method": "memit", "n": 16, "per_case": {"edited": [case(True)] * 16}}]
    assert methods.es_by_quarter(runs[0]) == [0.0, 25.0, 50.0, 75.0]
    assert methods.edit_age_lines([dict(r, n=100) for r in runs]) == [
        "", ("ES by the age of the edit, N = 100 (the requests in edit order, in quarters, first to last): "
             "ROME 0.0 / 25.0 / 50.0 / 75.0; MEMIT's one batch over the same quarters 100.0 / 100.0 / 100.0 / 100.0.")]
    assert methods.edit_age_lines(runs) == []  # too few requests for quarters to say anything


def test_compare_runs_finds_the_largest_gap_and_the_flipped_verdict():
    cmp = benchmark_script("compare_runs")
    row = lambda cid, new, true: {"case_id": cid, "rewrite": [{"new": new, "true": true}],
                                  "paraphrase": [{"new": 1.0, "true": 1.0}], "neighborhood": []}
    a = [row(1, 0.5, 2.0), row(2, 1.0, 1.5)]
    b = [row(1, 0.5, 2.25), row(2, 1.75, 1.5)]
    assert cmp.record_gaps(a, b) == [0.25, 0.75]
    assert [f["case_id"] for f in cmp.flips(a, b)] == [2]
    with pytest.raises(SystemExit, match="same records"):
        cmp.record_gaps(a, b[::-1])
