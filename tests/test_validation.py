"""Bad input is refused with a message naming the field, and the model is left exactly as it was."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from tokenizers import normalizers

from tiny_models import REQUESTS, Fingerprint, edit, hparams, make_tokenizer, target_holds, tiny_llama
from easyedit_baft import layers as plumbing
from easyedit_baft.baft_main import apply_baft_to_model
from easyedit_baft.requests import RequestError, target_token_ids

GOOD = {"prompt": "The capital of France is", "target_new": "Rome"}


def assert_refused_untouched(model, tok, requests, match, hp=None, error=RequestError):
    before = Fingerprint(model, tok)
    with pytest.raises(error, match=match):
        apply_baft_to_model(model, tok, requests, hp or hparams())
    before.assert_unchanged()


# --- malformed requests ---------------------------------------------------------------------------

BAD_REQUESTS = {
    "prompt missing": ([{"target_new": "Rome"}], "'prompt' is missing"),
    "prompt empty": ([{**GOOD, "prompt": ""}], "'prompt' is empty"),
    "prompt None": ([{**GOOD, "prompt": None}], "'prompt' is missing"),
    "prompt an int": ([{**GOOD, "prompt": 7}], "'prompt' is a int"),
    "target missing": ([{"prompt": "The capital of France is"}], "'target_new' is missing"),
    "target empty": ([{**GOOD, "target_new": ""}], "'target_new' is empty"),
    "target whitespace": ([{**GOOD, "target_new": " \t\n "}], "'target_new' is empty or whitespace"),
    "target a list": ([{**GOOD, "target_new": ["Rome"]}], "'target_new' is a list"),
    "target bytes": ([{**GOOD, "target_new": b"Rome"}], "'target_new' is a bytes"),
    "subject an int": ([{**GOOD, "subject": 3}], "'subject' is a int"),
    "subject not in prompt": ([{**GOOD, "subject": "Germany"}], "subject 'Germany' does not occur"),
    "loc_prompt a dict": ([{**GOOD, "loc_prompt": {"a": 1}}], "'loc_prompt' is a dict"),
    "request a string": (["The capital of France is Rome"], "request 0 is a str"),
    "second request bad": ([GOOD, {"prompt": "x"}], "request 1 .*'target_new' is missing"),
    "duplicate in batch": ([GOOD, REQUESTS[2], dict(GOOD)], "request 2 .*duplicates an earlier request"),
    "empty list": ([], "empty or not a list"),
    "None": (None, "empty or not a list"),
    "a string": ("The capital of France is", "empty or not a list"),
    "an int": (42, "empty or not a list"),
    "a set": ({"a", "b"}, "empty or not a list"),
    "a generator": ((r for r in [GOOD]), "empty or not a list"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_malformed_requests_are_refused_and_model_untouched(model, tok, case):
    requests, match = BAD_REQUESTS[case]
    assert_refused_untouched(model, tok, requests, match)


def test_error_names_the_request_by_its_prompt(tok):
    with pytest.raises(RequestError, match=r"request 0 \(prompt 'The capital of France is'\)"):
        apply_baft_to_model(tiny_llama(), tok, [{**GOOD, "target_new": "  "}], hparams())


def test_a_single_dict_or_a_tuple_of_requests_is_accepted(tok):
    for requests in (GOOD, (GOOD,)):
        model = tiny_llama()
        apply_baft_to_model(model, tok, requests, hparams())
        assert target_holds(model, tok, GOOD["prompt"], GOOD["target_new"])


# --- bad hyper-parameters for this model ----------------------------------------------------------


def test_layer_out_of_range_is_refused(model, tok):
    assert_refused_untouched(model, tok, [GOOD], r"layers=\[1, 9\]", hparams(layers=[1, 9]), ValueError)


def test_rank_larger_than_hidden_size_is_refused(model, tok):
    assert_refused_untouched(model, tok, [GOOD], "rank=65", hparams(rank=65), ValueError)


def test_missing_locality_source_file_is_refused(model, tok, tmp_path):
    hp = hparams(locality_source=str(tmp_path / "no_such_prompts.txt"))
    assert_refused_untouched(model, tok, [GOOD], "no_such_prompts.txt", hp, FileNotFoundError)


def test_locality_source_records_give_their_unrelated_question_with_its_answer(tmp_path):
    from easyedit_baft.prompt_sources import unrelated_prompts

    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"src": "edit me", "loc": "nq question: who wrote dune", "loc_ans": "Frank Herbert"},
                                {"locality_prompt": "The sky is"}, "A plain line"]))
    assert unrelated_prompts(str(path)) == ("nq question: who wrote dune Frank Herbert", "The sky is", "A plain line")


def test_hparams_of_another_class_are_refused(model, tok):
    class RomeHyperParams:
        alg_name = "ROME"

    assert_refused_untouched(model, tok, [GOOD], "pass BaFTHyperParams", RomeHyperParams(), TypeError)


# --- text that validates but does not tokenize well -----------------------------------------------


def test_target_that_tokenizes_to_nothing_is_refused(model):
    # Zero-width spaces are not whitespace to Python, but this tokenizer's normalizer drops them.
    dropping = make_tokenizer(normalizers.Sequence([normalizers.Replace("\u200b", ""), normalizers.Strip()]))
    request = {**GOOD, "target_new": "\u200b\u200b"}
    assert_refused_untouched(model, dropping, [request], "adds no tokens after the prompt")


def test_target_longer_than_max_length_is_refused(model, tok):
    request = {**GOOD, "target_new": "a very long target " * 4}
    assert_refused_untouched(model, tok, [request], "more than max_length=64")


def test_failure_in_second_request_of_a_batch_leaves_no_trace(model):
    dropping = make_tokenizer(normalizers.Sequence([normalizers.Replace("\u200b", ""), normalizers.Strip()]))
    assert_refused_untouched(model, dropping, [GOOD, {**GOOD, "target_new": "\u200b"}], "request 1")


@pytest.mark.parametrize("request_", [
    {"prompt": "Die Hauptstadt von Österreich ist", "target_new": "Zürich", "subject": "Österreich"},
    {"prompt": "日本の首都は", "target_new": "大阪"},
    {"prompt": "My favourite emoji is", "target_new": "🎉🐍"},
    {"prompt": "Le café 🍵 est servi à", "target_new": "Noël"},
], ids=["german", "japanese", "emoji", "mixed"])
def test_non_ascii_and_emoji_text_edits_correctly(tok, request_):
    model = tiny_llama()
    assert not target_holds(model, tok, request_["prompt"], request_["target_new"])
    edit(model, tok, request_)
    assert target_holds(model, tok, request_["prompt"], request_["target_new"])
    assert plumbing.get_state(model).edit_log[-1]["target_new"] == request_["target_new"]


def test_prompt_longer_than_max_length_is_cut_from_the_start_with_a_warning(tok, caplog):
    prompt = "After a long day of walking through the old town and its markets, the capital of France is"
    hp = hparams(max_length=40, n_context_prefixes=0)
    assert len(tok(prompt + " Rome")["input_ids"]) > hp.max_length
    model = tiny_llama()
    with caplog.at_level(logging.WARNING, logger="easyedit_baft.requests"):
        edit(model, tok, {"prompt": prompt, "target_new": "Rome"}, hp)
    assert any("max_length=40" in r.getMessage() and "first" in r.getMessage() for r in caplog.records)
    # What was trained: the last max_length tokens, ending in the target.
    ids, n_prompt = target_token_ids(tok, prompt, "Rome", hp.max_length, "test")
    assert len(ids) == hp.max_length
    with torch.no_grad():
        predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1)
    assert predicted[n_prompt - 1 : -1].tolist() == ids[n_prompt:]
