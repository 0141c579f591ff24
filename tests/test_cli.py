"""The command line end to end on a tiny model saved to disk, its refusals, and the benchmark-record readers.

Every refusal exits 2 with one line on stderr and leaves what is on disk (model, artifact) as it was;
those that can be made before the model loads are checked to happen before it loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
import yaml

from easyedit_baft import cli, model_loading, records
from easyedit_baft.artifacts import CONFIG_NAME, WEIGHTS_NAME
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


def run(argv, capsys) -> tuple:
    """(exit status, stdout, stderr) of one command."""
    try:
        cli.main([str(a) for a in argv])
        status = 0
    except SystemExit as done:
        status = done.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def snapshot(path: Path) -> dict:
    """Every file under path (or path itself) and its sha256: what a refusal must leave as it was."""
    if not path.exists():
        return {}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def edit_args(workspace, *extra, hparams="hparams.yaml", requests="cases.json"):
    return ["edit", "--requests", workspace / requests, "--hparams", workspace / hparams,
            "--model", workspace / "model", *extra]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command gets as far as loading the model."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the refusal")
    monkeypatch.setattr(model_loading, "load_model", refuse)


@pytest.fixture(scope="module")
def saved(workspace):
    """An artifact of the two CASES saved by `edit --save`, to copy and damage."""
    out = workspace / "saved-edits"
    cli.main([str(a) for a in edit_args(workspace, "--save", out)])
    return out


def test_edit_saves_an_artifact_that_apply_and_explain_use(workspace, capsys):
    out = workspace / "edits"
    status, printed, _ = run(edit_args(workspace, "--save", out), capsys)
    assert status == 0
    assert "2 edits; mean reliability 1.000" in printed
    assert (out / "edits.safetensors").is_file() and (out / "edit_config.json").is_file()
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["base_model_name_or_path"] == str(workspace / "model")  # the model edited, not model_name

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


def test_compare_without_a_host_says_how_to_get_one(capsys):
    if host_available():
        pytest.skip("an EasyEdit host is importable here; tests/host covers compare")
    status, _, err = run(["compare", "--n", "20"], capsys)
    assert status == 2 and "EASYEDIT_ROOT" in err and err.count("\n") == 1


def test_compare_forwards_every_argument_after_it(monkeypatch, capsys):
    import easyedit_baft.host

    forwarded = []
    monkeypatch.setattr(easyedit_baft.host, "host_available", lambda: True)
    monkeypatch.setattr(cli, "_run_compare_script", forwarded.append)
    assert run(["compare", "--n", "20", "--methods", "BaFT", "ROME", "--help"], capsys)[0] == 0
    assert forwarded == [["--n", "20", "--methods", "BaFT", "ROME", "--help"]]


# --- refusals: one line, exit 2, nothing on disk changed -------------------------------------------------


def assert_refused(status, err, *fragments):
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("easyedit-baft"), err
    for fragment in fragments:
        assert fragment in err, err


def write_hparams(workspace, name, **changes) -> str:
    (workspace / name).write_text(yaml.safe_dump({**TINY_HPARAMS, **changes}))
    return name


def test_edit_refuses_to_replace_saved_edits_without_overwrite(workspace, saved, tmp_path, capsys, no_model_load):
    target = Path(shutil.copytree(saved, tmp_path / "edits"))
    before = snapshot(target)
    status, _, err = run(edit_args(workspace, "--save", target, "--n", "1"), capsys)
    assert_refused(status, err, "already holds saved edits", "--overwrite")
    assert snapshot(target) == before


def test_edit_with_overwrite_replaces_saved_edits(workspace, saved, tmp_path, capsys):
    target = Path(shutil.copytree(saved, tmp_path / "edits"))
    assert run(edit_args(workspace, "--save", target, "--n", "1", "--overwrite"), capsys)[0] == 0
    assert json.loads((target / CONFIG_NAME).read_text())["edit_count"] == 1


@pytest.mark.parametrize("case", ["a file", "under a file", "a folder of other files"])
def test_save_path_that_cannot_take_the_edits_is_refused_before_the_model_loads(
        case, workspace, tmp_path, capsys, no_model_load):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "thesis.tex").write_text("mine")
    save, fragment = {"a file": (tmp_path / "notes.txt", "is a file"),
                      "under a file": (tmp_path / "notes.txt" / "edits", "is a file, not a directory"),
                      "a folder of other files": (tmp_path / "folder", "holds other files")}[case]
    before = snapshot(tmp_path)
    status, _, err = run(edit_args(workspace, "--save", save), capsys)
    assert_refused(status, err, "--save", fragment)
    assert snapshot(tmp_path) == before


def test_edits_that_do_not_hold_exit_1_and_are_not_saved_without_force(workspace, tmp_path, capsys):
    weak = write_hparams(workspace, "weak.yaml", n_steps=1, lr=1e-6)
    status, out, err = run(edit_args(workspace, "--save", tmp_path / "edits", hparams=weak), capsys)
    reason = err.strip().splitlines()[-1]  # after the progress bars, one line
    assert status == 1 and reason.startswith("easyedit-baft edit: error: 2 of 2 edits do not hold")
    assert "--force" in reason and "n_steps" in reason and reason.count("easyedit-baft") == 1
    assert not (tmp_path / "edits").exists()

    status, out, err = run(edit_args(workspace, "--save", tmp_path / "edits", "--force", hparams=weak), capsys)
    assert status == 1 and "do not hold" in err and (tmp_path / "edits" / CONFIG_NAME).is_file()

    status, _, err = run(edit_args(workspace, hparams=weak), capsys)
    assert status == 1 and "do not hold" in err


BAD_INPUTS = {
    "hparams unknown field": (dict(hparams=dict(colour="red")), "colour"),
    "hparams bad value": (dict(hparams=dict(rank=0)), "rank=0"),
    "hparams layer out of range": (dict(hparams=dict(layers=[1, 9])), "layers=[1, 9]"),
    "hparams missing locality file": (dict(hparams=dict(locality_source="missing.txt")), "locality_source"),
    "hparams unknown shipped pool": (dict(hparams=dict(locality_source="package:nope")), "package:nope"),
    "hparams model_parallel on cpu": (dict(hparams=dict(model_parallel=True)), "model_parallel"),
    "subject not in prompt": (dict(cases=[{"prompt": "Water boils at", "target_new": "50", "subject": "Ice"}]),
                              "subject 'Ice' does not occur"),
    "empty target": (dict(cases=[{"prompt": "Water boils at", "target_new": " "}]), "target_new"),
    "record of no known format": (dict(cases=[{"question": "q"}]), "no known format"),
    "requests not JSON": (dict(text="[{"), "not valid JSON"),
    "requests missing": (dict(missing=True), "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_hparams_or_requests_are_refused_before_the_model_loads(case, workspace, tmp_path, capsys, no_model_load):
    spec, fragment = BAD_INPUTS[case]
    hparams = write_hparams(workspace, f"bad-{abs(hash(case))}.yaml", **spec.get("hparams", {}))
    requests = tmp_path / "requests.json"
    if "text" in spec:
        requests.write_text(spec["text"])
    elif not spec.get("missing"):
        requests.write_text(json.dumps(spec.get("cases", CASES)))
    model_before = snapshot(workspace / "model")
    status, _, err = run(["edit", "--requests", requests, "--hparams", workspace / hparams,
                          "--model", workspace / "model", "--save", tmp_path / "edits"], capsys)
    assert_refused(status, err, fragment)
    assert not (tmp_path / "edits").exists() and snapshot(workspace / "model") == model_before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there, so device: cuda is no error")
def test_device_cuda_without_cuda_is_refused_not_run_on_cpu(workspace, saved, capsys, no_model_load):
    hparams = write_hparams(workspace, "cuda.yaml", device="cuda")
    status, _, err = run(edit_args(workspace, hparams=hparams), capsys)
    assert_refused(status, err, "device='cuda'", "no CUDA device", "device: cpu")
    assert_refused(*run(["apply", saved, "--device", "cuda:0"], capsys)[::2], "--device")


@pytest.mark.parametrize("argv, fragment", [
    (["edit", "--n", "0"], "--n: 0 is below 1"),
    (["demo", "--n", "many"], "'many' is not an integer"),
    (["apply", "x", "--max-new-tokens", "-3"], "-3 is below 1"),
    (["edit", "--colour", "red"], "unrecognized arguments: --colour red"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_argument_errors_are_one_line(argv, fragment, capsys, no_model_load):
    assert_refused(*run(argv, capsys)[::2], fragment)


def test_model_that_is_not_a_model_directory_is_refused(workspace, tmp_path, capsys):
    status, _, err = run(edit_args(workspace)[:-2] + ["--model", tmp_path], capsys)
    assert_refused(status, err, "--model", "config.json")


def _tamper_gate(directory: Path):
    config = json.loads((directory / CONFIG_NAME).read_text())
    config["hparams"]["gate"] = "ones"
    (directory / CONFIG_NAME).write_text(json.dumps(config))


def _fifo_config(directory: Path):
    (directory / CONFIG_NAME).unlink()
    os.mkfifo(directory / CONFIG_NAME)


DAMAGED = {
    "gate learned -> ones": (_tamper_gate, "changed after saving"),
    "config not JSON": (lambda d: (d / CONFIG_NAME).write_text("{not json"), "not valid JSON"),
    "config a FIFO": (_fifo_config, "not a regular file"),
    "weights truncated": (lambda d: (d / WEIGHTS_NAME).write_bytes((d / WEIGHTS_NAME).read_bytes()[:100]),
                          "truncated or corrupted"),
    "not a directory": (lambda d: shutil.rmtree(d), "not a directory"),
}


@pytest.mark.parametrize("command", ["apply", "explain"])
@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_apply_and_explain_refuse_a_damaged_artifact_before_the_model_loads(
        case, command, saved, tmp_path, capsys, no_model_load):
    damage, fragment = DAMAGED[case]
    target = Path(shutil.copytree(saved, tmp_path / "edits"))
    damage(target)
    before = snapshot(target) if target.exists() and case != "config a FIFO" else None
    argv = [command, target] + (["--prompt", "Water boils at", "--out", tmp_path / "g.png"] if command == "explain" else [])
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=run(argv, capsys)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), f"{command} blocked on {case}"
    assert_refused(*result["out"][::2], fragment)
    if before is not None:
        assert snapshot(target) == before
    assert not (tmp_path / "g.png").exists()


def test_explain_refuses_an_output_path_that_is_a_directory(saved, tmp_path, capsys, no_model_load):
    assert_refused(*run(["explain", saved, "--prompt", "Water", "--out", tmp_path], capsys)[::2], "is a directory")


def test_explain_on_a_long_prompt_says_it_shows_the_last_tokens(workspace, saved, tmp_path, capsys):
    prompt = "word " * 400 + "The capital of France is"
    status, out, _ = run(["explain", saved, "--prompt", prompt, "--model", workspace / "model",
                          "--out", tmp_path / "g.png"], capsys)
    assert status == 0 and f"the prompt has {len(prompt)} tokens: the heatmap shows the last 64" in out
    width = int.from_bytes((tmp_path / "g.png").read_bytes()[16:20], "big")
    assert width < 6000


def test_debug_shows_the_traceback_instead_of_one_line(workspace, capsys, no_model_load):
    with pytest.raises(cli.CLIError, match="colour"):
        cli.main([str(a) for a in edit_args(workspace, "--debug", hparams=write_hparams(
            workspace, "debug.yaml", colour="red"))])


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
