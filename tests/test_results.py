"""Result files: one name scheme written and read back by the same pair of functions, and older
files brought up to today's schema by one function."""

import json

import pytest

from memit.eval.results import SCHEMA, ResultName, load_result, parse_result_path, result_path, upgrade

NAMES = [ResultName("counterfact", "memit", 100), ResultName("zsre", "ft-w", 10, offset=500),
         ResultName("counterfact", "memit-seq", 2000, batch_size=100, base_stats=True),
         ResultName("counterfact", "rome", 100, seed=3), ResultName("counterfact", "memit", 1000, delta="step-0004")]


@pytest.mark.parametrize("name", NAMES)
def test_a_result_name_reads_back_as_itself(tmp_path, name):
    path = result_path(tmp_path, name)
    assert parse_result_path(path) == name
    assert name.plain == (name is NAMES[0])


def test_the_names_are_the_ones_committed_results_carry(tmp_path):
    assert result_path("r", NAMES[2]).name == "counterfact_memit-seq_n2000_seq100_basestats.json"
    assert result_path("r", NAMES[1]).name == "zsre_ft-w_n10_o500.json"
    assert result_path("r", ResultName("counterfact", "memit", 5, base_stats=True)).name == "counterfact_memit_n5.json"
    for other in ("tune_n100.json", "trace.json", "counterfact_memit_scaling.png", "mquake_memit_n20_per-case.json"):
        assert parse_result_path(other) is None


def test_old_files_are_upgraded_and_newer_ones_refused(tmp_path):
    old = {"method": "ft-l", "n": 100}
    assert upgrade(old) == {"method": "ft", "n": 100, "schema": SCHEMA} and old["method"] == "ft-l"
    (tmp_path / "r.json").write_text(json.dumps({"method": "memit", "schema": SCHEMA}))
    assert load_result(tmp_path / "r.json")["method"] == "memit"
    with pytest.raises(ValueError, match="newer than this memit understands"):
        upgrade({"schema": SCHEMA + 1})
