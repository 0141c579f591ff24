"""Every data set the benchmark runner names loads into EasyEdit's edit arguments, each through the
one record mapping (easyedit_baft.records), and no evaluation field reaches an edit request."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_data import DATA_FILES, build_requests, data_hash  # noqa: E402
from easyedit_baft import records  # noqa: E402

# WikiData_recent's knowledge insertion (the KnowEdit README's own example): no ground_truth.
RECENT = {
    "subject": "Leo Arons", "prompt": "The place of death of Leo Arons is", "target_new": "Berlin",
    "portability": {"Logical_Generalization": [{"prompt": "Is Leo Arons still alive?", "ground_truth": [["no"], ["false"]]}],
                    "Reasoning": [{"prompt": "The name of the continent which the place of death of Leo Arons is part of is",
                                   "ground_truth": [["Europe", "European continent"]]}]},
    "locality": {"Relation_Specificity": [{"prompt": "The name of the father of Leo Arons is",
                                           "ground_truth": [["Albert Arons"]]},
                                          {"prompt": "The name of the field of work of Leo Arons is",
                                           "ground_truth": [["experimental physics"]]}]},
}


def prepare_requests(prompts, target_new, ground_truth, rephrase_prompts=None, locality_inputs=None,
                     portability_inputs=None, **kwargs):
    """What the host's _prepare_requests checks and builds, without the host."""
    for name, sections in (("locality", locality_inputs), ("portability", portability_inputs)):
        for section in (sections or {}).values():
            assert len(section["prompt"]) == len(section["ground_truth"]) == len(prompts), name
    for prompt, subject in zip(prompts, kwargs.get("subject", prompts)):
        assert subject in prompt
    requests = []
    for i, (prompt, target, truth) in enumerate(zip(prompts, target_new, ground_truth, strict=True)):
        request = {"prompt": prompt, "target_new": target, "ground_truth": truth, "locality": {}, "portability": {}}
        if rephrase_prompts is not None:
            request["rephrase_prompt"] = rephrase_prompts[i]
        for name, sections in (("locality", locality_inputs), ("portability", portability_inputs)):
            for kind, section in (sections or {}).items():
                if section["prompt"][i] is not None:
                    request[name][kind] = {"prompt": section["prompt"][i], "ground_truth": section["ground_truth"][i]}
        requests.append(request)
    return requests


def data_dir_with(name: str) -> Path:
    path = records.default_data_dir() / DATA_FILES[name]
    if not path.is_file():
        pytest.skip(f"{path} is absent; set EASYEDIT_BAFT_DATA to the benchmark data folder")
    return records.default_data_dir()


@pytest.mark.parametrize("name, fmt, locality, portability", [
    ("zsre", "zsre", {"neighborhood"}, {"one_hop"}),
    ("counterfact", "counterfact", {"neighborhood"}, set()),
    ("knowedit_zsre", "knowedit", {"Relation_Specificity"}, {"Reasoning", "Subject_Aliasing", "Logical_Generalization"}),
    ("knowedit_wikicf", "knowedit", {"Relation_Specificity", "Forgetfulness"}, {"Reasoning", "Subject_Aliasing"}),
    ("knowedit_wikibio", "wikibio", {"Relation_Specificity"}, set()),
])
def test_every_shared_set_loads_into_requests(name, fmt, locality, portability):
    data_dir = data_dir_with(name)
    raw = json.loads((data_dir / DATA_FILES[name]).read_text())[:5]
    assert records.record_format(raw[0]) == fmt
    requests = build_requests(prepare_requests, data_dir, name, 5)
    assert len(requests) == 5
    assert set().union(*(r["locality"] for r in requests)) == locality
    assert set().union(*(r["portability"] for r in requests)) == portability
    for request in requests:
        assert request["prompt"] and request["target_new"]
        for section in (*request["locality"].values(), *request["portability"].values()):
            answers = section["ground_truth"]
            assert all(isinstance(a, str) and a.strip() for a in ([answers] if isinstance(answers, str) else answers))
    assert len(data_hash(data_dir, name)) == 16


def test_wikibio_edits_the_passage_with_its_next_sentence():
    data_dir = data_dir_with("knowedit_wikibio")
    raw = json.loads((data_dir / DATA_FILES["knowedit_wikibio"]).read_text())[0]
    [request] = build_requests(prepare_requests, data_dir, "knowedit_wikibio", 1)
    assert (request["prompt"], request["target_new"]) == (raw["text"], raw["labels"])
    assert request["ground_truth"] is None
    assert request["locality"]["Relation_Specificity"]["ground_truth"] == ["medicine", "medicine"]


def test_a_record_without_ground_truth_loads(tmp_path):
    # WikiData_recent inserts knowledge: no ground_truth, which once raised KeyError: 'ground_truth'.
    (tmp_path / "knowedit" / "wiki_recent").mkdir(parents=True)
    (tmp_path / DATA_FILES["knowedit_recent"]).write_text(json.dumps([RECENT, {**RECENT, "prompt": "Leo Arons died in"}]))
    first, second = build_requests(prepare_requests, tmp_path, "knowedit_recent", 2)
    assert first["ground_truth"] is None
    assert first["locality"]["Relation_Specificity"] == {
        "prompt": ["The name of the father of Leo Arons is", "The name of the field of work of Leo Arons is"],
        "ground_truth": ["Albert Arons", "experimental physics"]}
    assert first["portability"]["Logical_Generalization"]["ground_truth"] == ["no"]  # the first of its alternatives
    assert first["portability"]["Reasoning"]["ground_truth"] == ["Europe"]
    assert second["prompt"] == "Leo Arons died in"


def test_host_knowedit_items_map_like_the_json():
    item = {"subject": RECENT["subject"], "prompt": RECENT["prompt"], "target_new": RECENT["target_new"],
            "ground_truth": None, "portability_r": RECENT["portability"]["Reasoning"], "portability_s": None,
            "portability_l": RECENT["portability"]["Logical_Generalization"],
            "locality_rs": RECENT["locality"]["Relation_Specificity"], "locality_f": None}
    assert records.record_format(item) == "knowedit_item"
    from_item, from_json = records.edit_kwargs([item]), records.edit_kwargs([RECENT])
    assert from_item["locality_inputs"] == from_json["locality_inputs"]
    assert {k: v for k, v in from_item["portability_inputs"].items()} == from_json["portability_inputs"]
    assert "ground_truth" not in from_item  # the host fills in its placeholder


def test_one_pair_sections_stay_strings_and_missing_ones_none():
    zsre = {"src": "Q1?", "alt": "A", "answers": ["B"], "rephrase": "R1?", "subject": "Q1", "loc": "L?",
            "loc_ans": "x", "portability": {"New Question": "P?", "New Answer": "y"}}
    kwargs = records.edit_kwargs([zsre, {**zsre, "portability": None}])
    assert kwargs["locality_inputs"] == {"neighborhood": {"prompt": ["L?", "L?"], "ground_truth": ["x", "x"]}}
    assert kwargs["portability_inputs"] == {"one_hop": {"prompt": ["P?", None], "ground_truth": ["y", None]}}
    assert kwargs["ground_truth"] == ["B", "B"] and kwargs["rephrase_prompts"] == ["R1?", "R1?"]


def test_edit_requests_never_carry_evaluation_fields():
    for case in records.edit_cases([RECENT]):
        assert set(records.edit_request(case)) == {"prompt", "target_new", "subject"}


def test_unknown_data_set_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'wiki'.*knowedit_wikibio"):
        build_requests(prepare_requests, tmp_path, "wiki", 1)
    with pytest.raises(FileNotFoundError, match="knowedit/wiki_recent/recent_test.json.*--data-dir"):
        build_requests(prepare_requests, tmp_path, "knowedit_recent", 1)
