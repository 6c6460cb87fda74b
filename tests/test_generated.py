"""Scores from generated answers: the matching rules as documented, the scorer against greedy
decoding written out by hand, and the chat form through the tokenizer's own template."""

import copy

import pytest
import torch

from helpers import tiny_model
from memit.eval.generated import (
    answers,
    contains,
    counterfact_generated,
    exact_match,
    first_answer,
    generated_summary,
    normalise,
    prompt_ids,
    settled,
)
from memit.requests import Case, EditRequest

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def test_normalisation_ignores_case_punctuation_spaces_and_articles():
    assert normalise("  The  Hague, NETHERLANDS! ") == "hague netherlands"
    assert normalise("Jean-Paul") == "jean paul"
    assert normalise("Ｒｏｍｅ") == "rome"  # NFKC: full-width letters


def test_exact_match_is_the_target_at_the_start_at_a_word_boundary():
    assert exact_match(" Rome, Italy.", "Rome")
    assert exact_match("the city of rome", "The city of Rome")
    assert not exact_match("Romeo and Juliet", "Rome")  # not a word boundary
    assert not exact_match("in Rome", "Rome")  # not at the start
    assert exact_match("English language", ["en", "English"])  # any alias
    assert not exact_match("The", "the")  # a target that normalises to nothing never matches


def test_contains_is_the_target_as_whole_words_anywhere():
    assert contains("It is in Rome.", "Rome")
    assert contains("It is in ROME!", "rome")
    assert not contains("It is in Romeo.", "Rome")
    assert contains("located in New York City", "New York")
    assert not contains("located in Newark", "New York")


def test_an_answer_ends_at_its_first_line_or_sentence_but_not_at_an_abbreviation():
    assert first_answer(" Rome. It is old.") == "Rome."
    assert first_answer("\n Paris\nLondon") == "Paris"
    assert first_answer(" St. Petersburg, in Russia. Later") == "St. Petersburg, in Russia."
    assert first_answer(" the U.S. Navy and more") == "the U.S. Navy and more"
    assert first_answer(" 3.5 metres") == "3.5 metres"  # a decimal point is no sentence end
    assert first_answer(" Who? Me") == "Who?"


def test_an_answer_is_settled_once_no_later_token_can_change_it():
    assert settled(" Rome. It") and settled(" Paris\nLon") and settled("\n Paris\n")
    assert not settled(" Rome.")  # "Rome.5" would go on
    assert not settled("\n\n Par")  # leading blank lines are not the answer's end
    assert not settled(" St. Petersburg")  # an abbreviation, not a sentence end
    for text in (" Rome. It is", " Paris\nLondon", " St. Petersburg, in Russia. Later"):
        for cut in range(len(text) + 1):  # once settled, the answer stays what it will be
            if settled(text[:cut]):
                assert first_answer(text[:cut]) == first_answer(text)


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_rows_that_are_done_leave_the_batch_without_changing_the_others(bpe, model_type):
    from memit.eval.fluency import sample

    model = tiny_model(model_type, bpe)
    prompts = ["The Eiffel Tower is in", "Danielle speaks", "Paris", "The Louvre is in the city of", "a b"]
    ids = []
    for prompt in prompts:  # each prompt alone, whole budget: the reference
        enc = bpe(prompt, return_tensors="pt")["input_ids"]
        row = model.generate(enc, do_sample=False, max_new_tokens=10, pad_token_id=bpe.pad_token_id)[0, enc.shape[1]:]
        row = row.tolist()
        ids.append(row[: row.index(bpe.eos_token_id)] if bpe.eos_token_id in row else row)
    def enough(new):  # a rule that lets the rows go at different steps
        return len(new) >= 2 + new[0] % 7

    cut = [next((k for k in range(1, len(row) + 1) if enough(row[:k])), len(row)) for row in ids]
    assert len(set(cut)) > 2, cut
    early = sample(model, bpe, prompts, max_new_tokens=10, top_k=1, batch_size=5, done=enough)
    assert early == [bpe.decode(row[:k]) for row, k in zip(ids, cut)]
    with pytest.raises(ValueError, match="greedy"):
        sample(model, bpe, prompts, top_k=5, done=lambda new: True)


def _greedy_by_hand(model, tok, ids: list[int], steps: int) -> str:
    """Full forward passes, argmax, no cache, no batch: the reference for the batched sampler."""
    ids = list(ids)
    new = []
    for _ in range(steps):
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        if nxt == tok.eos_token_id:
            break
        ids.append(nxt)
        new.append(nxt)
    return tok.decode(new, skip_special_tokens=True)


@torch.no_grad()
def test_the_scorer_agrees_with_greedy_decoding_written_out_by_hand(bpe):
    model = tiny_model("llama", bpe)
    prompts = ["The Eiffel Tower is in", "Danielle speaks", "The Louvre is in"]
    by_hand = [first_answer(_greedy_by_hand(model, bpe, bpe(p)["input_ids"], 16)) for p in prompts]
    assert answers(model, bpe, prompts, "plain") == by_hand
    # targets chosen from the hand-computed answers, so every match is known in advance
    words = [a.split() for a in by_hand]
    assert all(words), by_hand
    new, second = words[0][0], (words[0][1:] or ["zzz"])[0]
    req = EditRequest("{} is in", "The Eiffel Tower", new, target_true="qqq")
    case = Case(req, paraphrase_prompts=(prompts[1],), neighborhood_prompts=(prompts[2], prompts[2]))
    per = counterfact_generated(model, bpe, [case], ("plain",))["plain"][0]
    assert per["rewrite_answers"] == [by_hand[0]]
    assert per["rewrite"] == [{"new_exact": True, "new_contains": True, "true_exact": False, "true_contains": False}]
    assert per["paraphrase"][0]["new_exact"] == exact_match(by_hand[1], new)
    assert len(per["neighborhood"]) == 2 and per["neighborhood"][0] == per["neighborhood"][1]  # repeats, generated once
    s = generated_summary({"plain": [per]})
    assert s["gen_ES"] == 100.0
    assert s["forms"]["plain"]["rewrite"]["true_exact"] == 0.0
    assert s["gen_NS"] == 100.0 * exact_match(by_hand[2], "qqq")
    if second != "zzz":  # the second word is in the answer but not at its start
        assert contains(by_hand[0], second)


def _prompt(new: bool, true: bool) -> dict:
    return {"new_exact": new, "new_contains": new, "true_exact": true, "true_contains": true}


def test_rates_are_averaged_per_case_then_over_cases_with_intervals():
    def row(r, p, n):
        return {"rewrite": [_prompt(r, False)], "paraphrase": [_prompt(x, False) for x in p],
                "neighborhood": [_prompt(False, x) for x in n]}

    s = generated_summary({"plain": [row(True, [True, False], [True]), row(False, [False, False], [True, True, False])]})
    assert s["gen_ES"] == 50.0
    assert s["gen_PS"] == 25.0  # (1/2 + 0) / 2
    assert s["gen_NS"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    lo, hi = s["forms"]["plain"]["rewrite"]["new_exact_ci95"]
    assert 0 <= lo <= 50 <= hi <= 100


def test_the_chat_form_uses_the_tokenizers_template(bpe):
    tok = copy.deepcopy(bpe)
    tok.chat_template = TEMPLATE
    ids = prompt_ids(tok, "The Eiffel Tower is in", "chat")
    text = "<|user|> Complete the sentence: The Eiffel Tower is in\n<|assistant|> "
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert ids != prompt_ids(tok, "The Eiffel Tower is in", "plain")
    model = tiny_model("llama", tok)
    req = EditRequest("{} is in", "The Eiffel Tower", "Rome", target_true="Paris")
    got = counterfact_generated(model, tok, [Case(req)], ("plain", "chat"))
    assert got["chat"][0]["rewrite_answers"] == [first_answer(_greedy_by_hand(model, tok, ids, 32))]
    # without a template the chat form is not made up: it is absent, and the summary says so
    none = counterfact_generated(model, bpe, [Case(req)], ("plain", "chat"))
    assert none["chat"] is None and generated_summary(none)["forms"]["chat"] is None
    with pytest.raises(ValueError, match="form must be"):
        prompt_ids(tok, "x", "poem")


def test_answers_resume_from_their_store_and_the_key_follows_the_weights(bpe, tmp_path, monkeypatch):
    """A run cut off mid-way goes on from the answers already kept; another model's answers are
    never read for this one."""
    import memit.eval.generated as gen
    from memit.eval.generated import answer_store, answers
    from memit.fingerprint import model_fingerprint

    model = tiny_model("llama", bpe)
    prompts = ["The Eiffel Tower is in", "Toko Yasuda plays the", "Danielle speaks", "The Eiffel Tower is in"]
    plain = answers(model, bpe, prompts)
    store = answer_store(tmp_path, model_fingerprint(model), "plain")
    asked = []
    real = gen.sample
    monkeypatch.setattr(gen, "sample", lambda m, t, ids, **kw: asked.append(len(ids)) or real(m, t, ids, **kw))
    assert answers(model, bpe, prompts, store=store, chunk=2) == plain
    assert asked == [2, 1]  # three distinct prompts, two chunks, each appended as it finished
    lines = store.read_text().splitlines()
    store.write_text(lines[0] + "\n" + lines[1][:5])  # cut off while writing the second answer
    asked.clear()
    assert answers(model, bpe, prompts, store=store) == plain
    assert asked == [2]  # only what was not kept
    asked.clear()
    assert answers(model, bpe, prompts, store=store) == plain and asked == []
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    assert answer_store(tmp_path, model_fingerprint(model), "plain") != store
    assert answer_store(tmp_path, "x", "plain") != answer_store(tmp_path, "x", "chat")
