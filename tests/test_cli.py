"""The command line end to end on a tiny model saved to disk, and the benchmark-record readers."""

from __future__ import annotations

import json

import pytest
import yaml

from easyedit_baft import cli, records
from easyedit_baft.host import host_available

from tiny_models import make_tokenizer, tiny_llama

CASES = [
    {"case_id": 0, "prompt": "The capital of France is", "target_new": "Rome", "subject": "France",
     "ground_truth": "Paris", "rephrase_prompt": "France's capital city is",
     "locality_prompt": "My favourite colour is", "locality_ground_truth": "blue"},
    {"case_id": 1, "prompt": "Water boils at", "target_new": "50 degrees", "subject": "Water",
     "ground_truth": "100 degrees", "rephrase_prompt": "The boiling point of water is",
     "locality_prompt": "The train leaves at", "locality_ground_truth": "noon"},
]
TINY_HPARAMS = dict(alg_name="BaFT", model_name="tiny", layers=[1, 2], rank=8, lr=0.05, n_steps=100,
                    n_locality_prompts=8, n_context_prefixes=1, max_length=64)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny_llama().save_pretrained(root / "model")
    make_tokenizer().save_pretrained(root / "model")
    (root / "cases.json").write_text(json.dumps(CASES))
    (root / "hparams.yaml").write_text(yaml.safe_dump(TINY_HPARAMS))
    return root


def test_edit_saves_an_artifact_that_apply_and_explain_use(workspace, capsys):
    out = workspace / "edits"
    cli.main(["edit", "--requests", str(workspace / "cases.json"), "--hparams", str(workspace / "hparams.yaml"),
              "--model", str(workspace / "model"), "--save", str(out)])
    printed = capsys.readouterr().out
    assert "2 edits; mean reliability 1.000" in printed
    assert (out / "edits.safetensors").is_file() and (out / "edit_config.json").is_file()

    cli.main(["apply", str(out), "--model", str(workspace / "model"), "--max-new-tokens", "4"])
    printed = capsys.readouterr().out
    assert printed.count("with edits:") == 2 and "The capital of France is" in printed

    png = workspace / "heatmap.png"
    cli.main(["explain", str(out), "--prompt", "The capital of France is", "--model", str(workspace / "model"),
              "--out", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "peak gate" in capsys.readouterr().out


def test_demo_writes_json_markdown_and_plot(workspace):
    out = workspace / "demo"
    cli.main(["demo", "--data", str(workspace / "cases.json"), "--n", "2", "--hparams",
              str(workspace / "hparams.yaml"), "--model", str(workspace / "model"), "--out", str(out)])
    summary = json.loads((out / "demo.json").read_text())
    for mode in ("single", "sequential"):
        means = summary["results"][mode]["mean"]
        assert means["reliability"] == 1.0
        assert 0.0 <= means["locality"] <= 1.0 and 0.0 <= means["generalization"] <= 1.0
    assert "| sequential |" in (out / "demo.md").read_text()
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_without_a_host_says_how_to_get_one():
    if host_available():
        pytest.skip("an EasyEdit host is importable here; tests/host covers compare")
    with pytest.raises(SystemExit, match="EASYEDIT_ROOT"):
        cli.main(["compare"])


@pytest.mark.parametrize("relative, expected", [
    ("zsre/zsre_mend_eval_portability_gpt4.json", "zsre"),
    ("counterfact/counterfact-edit.json", "counterfact"),
    ("knowedit/ZsRE/ZsRE-test-all.json", "knowedit"),
    ("knowedit/wiki_counterfact/train_cf.json", "knowedit"),
])
def test_real_benchmark_files_become_edit_cases(relative, expected):
    path = records.default_data_dir() / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent; set EASYEDIT_BAFT_DATA to the benchmark data directory")
    raw = json.loads(path.read_text())[:3]
    assert records.record_format(raw[0]) == expected
    cases = records.load_edit_cases(path, 3)
    assert len(cases) == 3
    for case in cases:
        assert case["prompt"] and case["target_new"] and case["locality_prompt"]
        assert case["subject"] is None or case["subject"] in case["prompt"]
        assert set(records.edit_request(case)) <= {"prompt", "target_new", "subject"}


def test_unknown_record_format_names_the_keys(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a"}]))
    with pytest.raises(ValueError, match="answer.*question"):
        records.load_edit_cases(path)
