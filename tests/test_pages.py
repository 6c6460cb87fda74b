"""The result pages are what their committed result files make: a stale page or a report script
that breaks on a new file fails here, not at the end of a long run."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _no_png_writes(monkeypatch):
    """The plots are drawn but not saved: a test never rewrites a committed file."""
    from memit.eval import plots

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import each other as they do when run

    def save(fig, out):
        plots.pyplot().close(fig)
        return Path(out)

    monkeypatch.setattr(plots, "save", save)


@pytest.mark.parametrize("script, doc", [("report", "results.md"), ("review", "review.md")])
def test_page_matches_its_result_files(script, doc):
    assert _script(script).page() == (ROOT / "docs" / doc).read_text(), (
        f"docs/{doc} is stale: run `python benchmarks/{script}.py{' report' if script == 'review' else ''}`")
