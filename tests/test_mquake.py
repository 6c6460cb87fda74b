"""MQuAKE: the records read as documented, a case's edits batched and restored, the rates counted
as stated, and the CLI writing both protocols."""

import json

import pytest

from conftest import shared_file
from helpers import tiny_model
from memit.cli import main
from memit.eval.mquake import batch_requests, load_mquake, run_mquake, summary
from memit.hparams import MemitHyperParams
from memit.requests import RequestError


def _record(case_id: int, subject: str, new: str, true: str) -> dict:
    return {"case_id": case_id, "questions": [f"Where is {subject}?", f"In which city is {subject}?", f"{subject} is in?"],
            "answer": true, "answer_alias": [f"{true} City"], "new_answer": new, "new_answer_alias": [],
            "requested_rewrite": [{"prompt": "{} is located in", "subject": subject,
                                   "target_new": {"str": new}, "target_true": {"str": true}},
                                  {"prompt": "{} was built by", "subject": subject,
                                   "target_new": {"str": "Anna"}, "target_true": {"str": "Gustave"}}]}


@pytest.fixture
def records(tmp_path):
    recs = [_record(1, "The Eiffel Tower", "Rome", "Paris"), _record(2, "The Louvre", "London", "Paris"),
            _record(3, "The Eiffel Tower", "Berlin", "Paris")]  # case 3 conflicts with case 1
    path = tmp_path / "mq.json"
    path.write_text(json.dumps(recs))
    return path


def test_records_and_one_batch_of_every_cases_facts(records, tmp_path):
    cases = load_mquake(records)
    assert [c.case_id for c in cases] == [1, 2, 3] and len(load_mquake(records, 2)) == 2
    assert cases[0].requests[0].text == "The Eiffel Tower is located in"
    assert cases[0].new_answers == ("Rome",) and cases[0].old_answers == ("Paris", "Paris City")
    reqs, conflicts = batch_requests(cases)
    # case 3's location conflicts with case 1's (dropped, counted); its builder edit is case 1's (once)
    assert [(r.subject, r.target_new) for r in reqs] == [("The Eiffel Tower", "Rome"), ("The Eiffel Tower", "Anna"),
                                                          ("The Louvre", "London"), ("The Louvre", "Anna")]
    assert conflicts == 1
    (tmp_path / "bad.json").write_text(json.dumps([{"case_id": 1, "questions": []}]))
    with pytest.raises(RequestError, match="record 0: not in the MQuAKE schema"):
        load_mquake(tmp_path / "bad.json")


def test_rates_count_a_case_as_new_when_any_question_is():
    def row(new, old, hop):
        return {"plain": {"new": new, "old": old, "single_hop": hop}, "single_hop_tf": hop}

    s = summary([row([False, True, False], [True, False, False], [True, True]),
                 row([False, False, False], [False, False, False], [True, False])])
    assert s["plain"]["multi_hop_new_any"]["rate"] == 50.0
    assert s["plain"]["multi_hop_new_mean"]["rate"] == pytest.approx(100 / 6)
    assert s["plain"]["multi_hop_old_any"]["rate"] == 50.0
    assert s["plain"]["single_hop"]["rate"] == 75.0 and s["single_hop_tf"]["rate"] == 75.0
    assert "chat" not in s


def test_both_protocols_restore_the_model_and_resume(records, bpe, corpus_file, tmp_path):
    from memit.fingerprint import model_fingerprint

    model = tiny_model("llama", bpe)
    before = model_fingerprint(model)
    hp = MemitHyperParams(layers=[1, 2], v_num_grad_steps=3, prefixes=["I said. "], stats_corpus=corpus_file,
                          stats_tokens=1024, stats_seq_len=32)
    cases = load_mquake(records, 2)
    per = run_mquake(model, bpe, cases, hp, "memit", "per-case", tmp_path / "per.json", progress=False)
    assert model_fingerprint(model) == before
    assert len(per["per_case_edited"]) == 2 and per["edited"]["cases"] == 2 and "plain" in per["edited"]
    assert all(isinstance(r["held"], int) for r in per["per_case_edited"])  # each case's own verification
    allb = run_mquake(model, bpe, cases, hp, "memit", "all", tmp_path / "all.json", progress=False)
    assert model_fingerprint(model) == before and allb["requests"] == 4 and allb["conflicts_dropped"] == 0
    # a finished file is read back, not recomputed
    again = run_mquake(model, bpe, cases, hp, "memit", "all", tmp_path / "all.json", progress=False)
    assert again["edit_wall_s"] == allb["edit_wall_s"]


def test_cli_writes_both_modes_and_refuses_a_bad_file(records, bpe, tmp_path, capsys):
    from helpers import CORPUS

    model_dir = tmp_path / "model"
    tiny_model("llama", bpe).save_pretrained(model_dir)
    bpe.save_pretrained(model_dir)
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS * 3))
    (tmp_path / "hp.json").write_text(json.dumps({"layers": [1, 2], "prefixes": ["I said. "], "v_num_grad_steps": 2,
                                                  "stats_corpus": str(tmp_path / "corpus.txt"), "stats_tokens": 1000,
                                                  "stats_seq_len": 32}))
    base = ["mquake", "--model", str(model_dir), "--hparams", str(tmp_path / "hp.json"), "--quiet"]
    assert main([*base, "--data", str(records), "--n", "2", "--out", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "MQuAKE per-case, 2 cases" in out and "MQuAKE all, 2 cases" in out and "multi-hop new" in out
    assert (tmp_path / "res" / "mquake_memit_n2_per-case.json").is_file()
    (tmp_path / "bad.json").write_text("{not json")
    assert main([*base, "--data", str(tmp_path / "bad.json"), "--out", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "cannot read MQuAKE records" in err and err.count("\n") == 1
    assert main([*base, "--data", str(records), "--n", "9", "--out", str(tmp_path / "res")]) == 2
    assert "has only 3 cases" in capsys.readouterr().err


def test_the_shared_mquake_file_reads_whole():
    cases = load_mquake(shared_file("data/mquake/MQuAKE-hard.json"))
    assert len(cases) == 429 and all(len(c.requests) == 4 and len(c.questions) == 3 for c in cases)
