"""Request files in every supported schema, validation, and where the subject and target are."""

import json

import pytest

from helpers import make_tokenizer
from memit.requests import EditRequest, RequestError, load_cases, parse_record
from memit.tokens import encode, encode_filled, pad

ROME = {"case_id": 7, "requested_rewrite": {"prompt": "{} plays the", "subject": "Toko Yasuda",
                                            "target_new": {"str": "piano"}, "target_true": {"str": "guitar"}},
        "paraphrase_prompts": ["Toko Yasuda is good at the"], "neighborhood_prompts": ["John plays the"],
        "generation_prompts": ["Toko Yasuda is"]}
EASY = {"case_id": 2, "prompt": "Toko Yasuda, the", "target_new": "piano", "subject": "Toko Yasuda",
        "ground_truth": "guitar", "rephrase_prompt": "Toko Yasuda is incredible at",
        "locality_prompt": "John Lennon performs on the", "locality_ground_truth": "guitar"}
ZSRE = {"subject": "IAAF Combined Events Challenge", "src": "When was the inception of IAAF Combined Events Challenge?",
        "answers": ["1998"], "rephrase": "When was the IAAF Combined Events Challenge launched?",
        "loc": "nq question: who sang it", "loc_ans": "The String"}
OURS = {"prompt": "{} is located in", "subject": "Angola", "target_new": "Antarctica"}


@pytest.mark.parametrize("rec,template,target,true", [
    (ROME, "{} plays the", "piano", "guitar"),
    (EASY, "{}, the", "piano", "guitar"),
    (ZSRE, "When was the inception of {}?", "1998", None),
    (OURS, "{} is located in", "Antarctica", None),
])
def test_each_schema_parses(rec, template, target, true):
    case = parse_record(rec, 0)
    assert case.request.prompt == template and case.request.target_new == target
    assert case.request.target_true == true


def test_schema_extras():
    assert parse_record(ROME, 0).neighborhood_prompts == ("John plays the",)
    assert parse_record(EASY, 0).paraphrase_prompts == ("Toko Yasuda is incredible at",)
    z = parse_record(ZSRE, 0)
    assert z.loc_prompt.startswith("nq question") and z.loc_answer == "The String"


def test_json_and_jsonl_files(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([OURS, ROME]))
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps(OURS) + "\n\n" + json.dumps(EASY) + "\n")
    assert len(load_cases(a)) == 2 and len(load_cases(b)) == 2
    assert [c.request.case_id for c in load_cases(a, case_ids=[7])] == [7]
    assert load_cases(a, n=1, offset=1)[0].request.subject == "Toko Yasuda"


@pytest.mark.parametrize("rec,needle", [
    ({"prompt": "{} is in", "subject": "", "target_new": "x"}, "'subject'"),
    ({"prompt": "It is in", "subject": "Paris", "target_new": "x"}, "'subject'"),
    ({"prompt": "{} is in", "subject": "Paris", "target_new": "  "}, "'target_new'"),
    ({"prompt": "{} is in", "subject": "Paris", "target_new": "France", "target_true": "France"}, "'target_new'"),
    ({"prompt": "{} is in", "subject": 5, "target_new": "x"}, "'subject'"),
    ({"prompt": "{} is in", "target_new": "x"}, "'subject'"),
    ({"requested_rewrite": {"prompt": "{} is", "subject": "A"}}, "target_new.str"),
])
def test_bad_records_name_the_record_and_field(rec, needle):
    with pytest.raises(RequestError) as e:
        parse_record(rec, 3)
    msg = str(e.value)
    assert "record 3" in msg and needle in msg and "\n" not in msg


def test_conflicting_targets_in_one_batch(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps([OURS, dict(OURS, target_new="Europe")]))
    with pytest.raises(RequestError, match="record 1: field 'target_new': conflicts with record 0"):
        load_cases(f)


@pytest.mark.parametrize("content,needle", [("", "empty"), ("[{]", "not valid JSON"), ("hello", "neither JSON"),
                                            ("[]", "no records"), ('{"a": 1}\n{"b":', "line 2")])
def test_bad_files(tmp_path, content, needle):
    f = tmp_path / "r.json"
    f.write_text(content)
    with pytest.raises(RequestError, match=needle):
        load_cases(f)


TOKENIZERS = [("bpe", False), ("bpe", True), ("sp", False), ("sp", True), ("ws", False), ("ws", True)]


@pytest.mark.parametrize("kind,bos", TOKENIZERS)
def test_subject_last_token_and_target_tokens(kind, bos):
    tok = make_tokenizer(kind, bos)
    enc = encode_filled(tok, "{} is located in the city of", "The Eiffel Tower", "Rome", prefix="I said. ")
    text = "I said. The Eiffel Tower is located in the city of Rome"
    offsets = tok(text, return_offsets_mapping=True)["offset_mapping"]
    s, e = offsets[enc.subject_last]
    assert "Tower"[-1] in text[s:e] and e >= text.index("Tower") + 5 > s
    assert tok.decode(enc.ids[enc.n_prompt:]).strip() == "Rome"
    prompt_ids = tok(text[: -len(" Rome")], add_special_tokens=True)["input_ids"]
    assert enc.ids[:enc.n_prompt] == prompt_ids  # the prompt tokens are the prompt's own tokens
    if bos:
        assert enc.ids[0] == tok.bos_token_id


@pytest.mark.parametrize("kind", ["bpe", "sp", "ws"])
def test_target_with_leading_space_or_prompt_with_trailing_space(kind):
    tok = make_tokenizer(kind)
    a = encode(tok, "Rome is the capital of", "Italy")
    b = encode(tok, "Rome is the capital of", " Italy")
    assert a == b and tok.decode(a.ids[a.n_prompt:]).strip() == "Italy"
    c = encode(tok, "Rome is the capital of ", "Italy")
    assert tok.decode(c.ids[c.n_prompt:]).strip() == "Italy"


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_keeps_positions(side):
    batch = pad([[5, 6, 7], [8]], 0, side)
    assert batch.position_ids.tolist()[1][batch.shift[1]] == 0
    row = batch.input_ids[1].tolist()
    assert row[batch.shift[1]] == 8 and batch.attention_mask.sum().item() == 4


def test_request_text():
    assert EditRequest("{} is in", "Paris", "France").text == "Paris is in"
