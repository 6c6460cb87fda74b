"""Every kind of bad input: one line naming the record and field, exit code 2, nothing written,
and the model bit-identical (on disk for the CLI, in memory for the Python API)."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
import transformers as T
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import memit
from helpers import CORPUS, tiny_model
from memit.cli import main
from memit.requests import RequestError, parse_record, read_records

GOOD = {"prompt": "{} is located in the city of", "subject": "The Eiffel Tower", "target_new": "Rome",
        "target_true": "Paris"}
LONG = "word " * 200

# (name, records or raw file text, extra CLI args, text the one-line error must contain)
CASES = [
    ("no {} and subject absent", [dict(GOOD, prompt="It is located in")], [], "record 0: field 'subject'"),
    ("subject missing from prompt", [GOOD, dict(GOOD, prompt="Where is it?", subject="Louvre")], [],
     "record 1: field 'subject'"),
    ("subject empty", [dict(GOOD, subject="")], [], "record 0: field 'subject'"),
    ("subject lost in tokenization", [dict(GOOD, prompt="{} is in", subject="<pad>")], [],
     "request 0 (case_id 0): subject lost in tokenization"),
    ("target empty", [dict(GOOD, target_new="")], [], "record 0: field 'target_new'"),
    ("target whitespace", [dict(GOOD, target_new="   ")], [], "record 0: field 'target_new'"),
    ("target equals true", [dict(GOOD, target_new="Paris")], [], "record 0: field 'target_new'"),
    ("subject not a string", [dict(GOOD, subject=7)], [], "record 0: field 'subject'"),
    ("target not a string", [dict(GOOD, target_new=["Rome"])], [], "record 0: field 'target_new'"),
    ("prompt not a string", [dict(GOOD, prompt=None)], [], "record 0: missing field 'prompt'"),
    ("two {} in prompt", [dict(GOOD, prompt="{} and {} are in")], [], "record 0: field 'prompt'"),
    ("conflicting targets", [GOOD, dict(GOOD, target_new="Berlin")], [], "record 1: field 'target_new': conflicts"),
    ("prompt longer than context", [dict(GOOD, prompt=LONG + "{} is in")], [], "longer than the model's context"),
    ("layers out of range", [GOOD], ["--layers", "2,7"], "out of range"),
    ("negative layer", [GOOD], ["--layers=-1,2"], "out of range"),
    ("not JSON", "this is not json", [], "neither JSON nor JSONL"),
    ("truncated JSON", '[{"prompt": "{} is", "subject": "A", "target', [], "not valid JSON"),
    ("truncated JSONL", json.dumps(GOOD) + '\n{"prompt": "{} x', [], "line 2 is not valid JSON"),
    ("empty file", "", [], "file is empty"),
    ("empty list", "[]", [], "holds no records"),
    ("record not an object", "[1, 2]", [], "record 0: expected a JSON object"),
    ("CounterFact record missing fields", [{"case_id": 5, "requested_rewrite": {"prompt": "{} is in", "subject": "A"}}],
     [], "record 0 (case_id 5): missing field 'requested_rewrite.target_new.str'"),
    ("zsRE record without answers", [{"src": "Who is A?", "subject": "A", "answers": []}], [], "field 'answers'"),
]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bpe):
    root = tmp_path_factory.mktemp("bad")
    tiny_model("llama", bpe).save_pretrained(root / "model")
    bpe.save_pretrained(root / "model")
    (root / "corpus.txt").write_text("\n".join(CORPUS * 3))
    (root / "hp.json").write_text(json.dumps({"layers": [1, 2], "lam": 0.5, "prefixes": [],
                                              "stats_corpus": str(root / "corpus.txt"), "stats_tokens": 1000,
                                              "stats_seq_len": 32, "v_num_grad_steps": 2}))
    return root


@pytest.mark.parametrize("name,content,extra,needle", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input(setup, capsys, name, content, extra, needle):
    root = setup
    reqs = root / "reqs.json"
    reqs.write_text(content if isinstance(content, str) else json.dumps(content))
    before = _digest(root / "model")
    rc = main(["edit", "--model", str(root / "model"), "--hparams", str(root / "hp.json"), "--requests", str(reqs),
               "--out", str(root / "out"), "--delta", str(root / "d.safetensors"), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("memit: error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert needle in err
    assert not (root / "out").exists() and not (root / "d.safetensors").exists()
    assert _digest(root / "model") == before


API_CASES = [c for c in CASES if isinstance(c[1], list) and not c[2]]


@pytest.mark.parametrize("name,content,extra,needle", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_requests_leave_the_model_bit_identical(setup, bpe, name, content, extra, needle):
    model = tiny_model("llama", bpe)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((RequestError, memit.EditError)) as e:
        requests = [parse_record(r, i).request for i, r in enumerate(content)]
        memit.edit(model, bpe, requests, memit.MemitHyperParams.from_json(setup / "hp.json"), progress=False)
    assert needle.split(": ", 1)[-1].split("'")[0] in str(e.value)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_unknown_architecture_from_the_cli(tmp_path, capsys, bpe):
    cfg = T.BertConfig(vocab_size=len(bpe), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, is_decoder=True)
    T.BertLMHeadModel(cfg).save_pretrained(tmp_path / "bert")
    bpe.save_pretrained(tmp_path / "bert")
    (tmp_path / "r.json").write_text(json.dumps([GOOD]))
    rc = main(["edit", "--model", str(tmp_path / "bert"), "--requests", str(tmp_path / "r.json"),
               "--delta", str(tmp_path / "d.safetensors")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unsupported model_type 'bert'" in err and "llama" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d.safetensors").exists()


def test_nan_anywhere_refuses_the_edit_and_restores(setup, bpe):
    model = tiny_model("llama", bpe)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hp = memit.MemitHyperParams.from_json(setup / "hp.json")
    from memit.stats import second_moments

    stats = second_moments(model, bpe, memit.models.get_arch(model), [1, 2], corpus=hp.stats_corpus,
                           max_tokens=hp.stats_tokens, seq_len=hp.stats_seq_len, progress=False)
    stats[2] = stats[2].clone()
    stats[2][0, 0] = float("nan")
    with pytest.raises(memit.EditError, match="layer 2: statistics C₀ contain NaN"):
        memit.edit(model, bpe, [memit.EditRequest(GOOD["prompt"], GOOD["subject"], "Rome")], hp, stats=stats,
                   progress=False)
    # layer 1 had already been updated when layer 2 failed: it was put back bit for bit
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_oversized_file_is_refused(tmp_path, monkeypatch):
    import memit.requests as rq

    monkeypatch.setattr(rq, "MAX_FILE_BYTES", 100)
    f = tmp_path / "big.json"
    f.write_text(json.dumps([GOOD] * 10))
    with pytest.raises(RequestError, match="larger than the 100-byte limit"):
        read_records(f)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                       max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={k: JSONISH | st.text(max_size=20) for k in
                                             ["prompt", "subject", "target_new", "target_true", "requested_rewrite",
                                              "src", "answers", "ground_truth", "case_id", "rephrase_prompt"]})


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(rec=FIELDS | JSONISH)
@example(rec={"case_id": "\n", "requested_rewrite": {}})  # found by hypothesis: a newline in case_id
def test_fuzz_parse_record_only_raises_request_errors(rec):
    try:
        case = parse_record(rec, 0)
    except RequestError as e:
        assert "\n" not in str(e) and str(e).startswith("record 0")
    else:
        r = case.request
        assert r.prompt.count("{}") == 1 and r.subject.strip() and r.target_new.strip()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(text=st.text(max_size=200))
def test_fuzz_read_records_only_raises_request_errors(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("fuzz") / "r.json"
    f.write_text(text, encoding="utf-8")
    try:
        read_records(f)
    except RequestError as e:
        assert "\n" not in str(e)
