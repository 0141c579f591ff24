"""KnowEdit's own summary (Edit Succ, Portability and Locality per kind, Fluency, their HM) from the
host's per-record metrics, as EasyEdit's KnowEdit script computes it; and the one mean and HM rule."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from easyedit_baft.metrics import harmonic_mean, knowedit_summary, mean, record_scores  # noqa: E402

# Three records as BaseEditor.edit returns them: the second has no portability, the third no Forgetfulness.
METRICS = [
    {"post": {"rewrite_acc": [1.0], "locality": {"Relation_Specificity_acc": [1.0, 0.5], "Forgetfulness_acc": [0.0]},
              "portability": {"Reasoning_acc": [0.5], "Subject_Aliasing_acc": [1.0, 1.0]},
              "fluency": {"ngram_entropy": 5.0}}},
    {"post": {"rewrite_acc": [0.5], "locality": {"Relation_Specificity_acc": [1.0], "Forgetfulness_acc": [1.0]},
              "portability": {}, "fluency": {"ngram_entropy": 6.0}}},
    {"post": {"rewrite_acc": [0.0], "locality": {"Relation_Specificity_acc": [0.5]},
              "portability": {"Reasoning_acc": [0.0]}}},
]


def easyedit_knowedit_summary(datas):
    """EasyEdit's KnowEdit summary written out as its script does it (x 100, lists summed and divided)."""
    edit_succ = sum(d["post"]["rewrite_acc"][0] for d in datas) / len(datas) * 100
    out = {"Edit_Succ": edit_succ}
    for section in ("portability", "locality"):
        per_record, per_kind = [], {}
        for d in datas:
            case = [sum(v) / len(v) * 100 for v in d["post"][section].values()]
            for key, v in d["post"][section].items():
                per_kind.setdefault(key[:-4], []).append(sum(v) / len(v) * 100)
            if case:
                per_record.append(sum(case) / len(case))
        out[section] = sum(per_record) / len(per_record)
        out[section + "_kinds"] = {k: sum(v) / len(v) for k, v in per_kind.items()}
    fluency = [d["post"]["fluency"]["ngram_entropy"] for d in datas if "fluency" in d["post"]]
    out["Fluency"] = sum(fluency) / len(fluency) * 100
    return out


def test_summary_is_easyedits_knowedit_summary():
    summary = knowedit_summary([record_scores(m["post"]) for m in METRICS])
    expected = easyedit_knowedit_summary(METRICS)
    assert 100 * summary["edit_succ"] == pytest.approx(expected["Edit_Succ"]) == pytest.approx(50.0)
    assert 100 * summary["portability"] == pytest.approx(expected["portability"]) == pytest.approx(37.5)
    assert 100 * summary["locality"] == pytest.approx(expected["locality"]) == pytest.approx((37.5 + 100 + 50) / 3)
    for section in ("portability", "locality"):
        assert {k: 100 * v for k, v in summary[section + "_kinds"].items()} == pytest.approx(expected[section + "_kinds"])
    assert summary["locality_kinds"] == pytest.approx({"Relation_Specificity": 0.75, "Forgetfulness": 0.5})
    assert 100 * summary["fluency"] == pytest.approx(expected["Fluency"]) == pytest.approx(550.0)
    s, p, l = summary["edit_succ"], summary["portability"], summary["locality"]
    assert summary["hm"] == pytest.approx(3 / (1 / s + 1 / p + 1 / l))


def test_a_set_without_portability_has_none_and_hm_of_the_rest():
    scores = [record_scores({"rewrite_acc": [1.0], "locality": {"Relation_Specificity_acc": [0.5]}})]
    summary = knowedit_summary(scores)
    assert summary["portability"] is None and summary["portability_kinds"] == {}
    assert summary["hm"] == pytest.approx(2 / (1 / 1.0 + 1 / 0.5))


@pytest.mark.parametrize("values, expected", [([], None), ([None], None), ([0.5, None], 0.5), ([0.0, 1.0], 0.0),
                                              ([1.0, 0.5], 2 / 3)])
def test_one_harmonic_mean_rule(values, expected):
    assert harmonic_mean(values) == (pytest.approx(expected) if expected is not None else None)


def test_one_mean_rule():
    assert mean([]) is None and mean([None, float("nan")]) is None
    assert mean([[1.0, 0.0], 1.0, None, []]) == pytest.approx(0.75)  # a list counts as its own mean
    np = pytest.importorskip("numpy")
    assert mean([np.float64(1.0), np.array([0.0, 1.0]), np.float32("nan")]) == pytest.approx(0.75)


def test_report_gives_knowedit_sets_their_own_table(tmp_path):
    from bench_report import load_runs, markdown_tables

    records = [record_scores(m["post"]) for m in METRICS]
    for data_set in ("knowedit_wikicf", "zsre"):
        out = tmp_path / "runs" / "n3" / data_set / "single" / "BaFT.json"
        out.parent.mkdir(parents=True)
        out.write_text(json.dumps({"status": "ok", "method": "BaFT", "set": data_set, "scenario": "single", "n": 3,
                                   "rel": 0.5, "gen": None, "loc": 0.6, "port": 0.4, "fluency": 5.5,
                                   "seconds_per_edit": 1.0, "records": records}))
    runs = load_runs(tmp_path)
    knowedit = {r["set"]: r.get("knowedit") for r in runs}
    assert knowedit["zsre"] is None and knowedit["knowedit_wikicf"]["edit_succ"] == pytest.approx(0.5)
    table = markdown_tables(runs, SimpleNamespace(model="m", fluency_n=3))
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| method | Edit Succ"))
    assert "Port. Reasoning" in lines[at] and "Loc. Forgetfulness" in lines[at]
    assert lines[at + 2].startswith("| BaFT | 50.0 | 37.5 |") and lines[at + 2].endswith("| 550.0 | 47.9 |")
    assert table.count("| method | Edit Succ") == 1  # only the KnowEdit set
