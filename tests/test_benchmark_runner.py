"""The benchmark runner's bookkeeping: the single-edit journal and the sequence checkpoint (a cut-off
run resumes without redoing or losing work) and results that record no machine-specific paths."""

import dataclasses
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_methods import METHODS, load_hparams  # noqa: E402
from bench_progress import Journal, SequenceCheckpoint, checkpoint_dir, final_state_dir, journal_path  # noqa: E402
from bench_report import curve_points, load_runs, table_row  # noqa: E402
from bench_scenarios import Host, Scenario, run_sequential, run_undone  # noqa: E402
from bench_worker import REPO_ROOT, RunSpec, changed_fields, hparams_record, portable_path  # noqa: E402


class Interrupted(Exception):
    pass


class FakeEditor:
    """Stands in for the host's BaseEditor: 'edits' by recording the prompt, fails on request."""

    def __init__(self, fail_at=None):
        self.model = torch.nn.Linear(2, 2)
        self.model_name, self.tok = "fake", None
        self.hparams = type("HP", (), {"device": "cpu", "alg_name": "FAKE"})()
        self.edited, self.fail_at = [], fail_at

    def apply_algo(self, model, tok, requests, hparams, **kwargs):
        if requests[0]["prompt"] == self.fail_at:
            raise Interrupted(requests[0]["prompt"])
        self.edited.append(requests[0]["prompt"])
        return model, {"weight": model.weight.detach().clone()}


def fake_exact_match(model, tok, request, locality_before):
    return {"rel": float(request["prompt"] not in ("p0", "Who made Q0?")), "gen": None, "loc": None, "port": None}


def fake_host():
    def quality(model, name, hparams, tok, request, device, test_generation=False):
        # rewrite_acc depends on the request, so a mixed-up or repeated record changes the mean.
        return {"rewrite_acc": [request["score"]], "rephrase_acc": [1.0], "locality": {}, "portability": {}}

    return Host(BaseEditor=None, compute_edit_quality=quality, finalize_locality_metrics=lambda *a: None,
                restore_after_edit=lambda *a: None, prepare_requests=None, exact_match=fake_exact_match)


REQUESTS = [{"prompt": f"p{i}", "target_new": "t", "score": i / 10} for i in range(6)]
HEADER = {"method": "ROME", "set": "zsre", "scenario": "single", "n": 6}


def run(path, editor, header=HEADER):
    journal = Journal(path, header)
    return journal, run_undone(fake_host(), editor, METHODS["ROME"], REQUESTS, [{}] * 6, 0, 1, journal)


def test_cut_off_run_resumes_after_the_journalled_records(tmp_path):
    path = journal_path(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run(path, FakeEditor(fail_at="p3"))
    assert len(path.read_text().splitlines()) == 1 + 3  # header + records 0, 1, 2

    editor = FakeEditor()
    journal, result = run(path, editor)
    assert editor.edited == ["p3", "p4", "p5"]  # nothing redone
    assert [r["rel"] for r in result.records] == [i / 10 for i in range(6)]  # in order, none lost
    assert result.n_edits == len(result.edit_seconds) == 6
    assert result.costs["params_per_edit"] == 4  # the 2x2 weight each edit "changes"
    journal.done()
    assert not path.exists()


def test_a_journal_line_cut_off_mid_write_is_redone_not_fatal(tmp_path):
    path = journal_path(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run(path, FakeEditor(fail_at="p3"))
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # the process died while writing record 2
    editor = FakeEditor()
    _, result = run(path, editor)
    assert editor.edited == ["p2", "p3", "p4", "p5"]
    assert [r["rel"] for r in result.records] == [i / 10 for i in range(6)]
    assert all(json.loads(line) for line in path.read_text().splitlines())  # no cut-off line left behind


def test_a_bad_journal_line_before_the_last_is_refused(tmp_path):
    path = journal_path(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run(path, FakeEditor(fail_at="p3"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        run(path, FakeEditor())


def test_a_batch_scenario_edits_k_requests_a_call_and_scores_each():
    editor = FakeEditor()
    result = run_undone(fake_host(), editor, METHODS["ROME"], REQUESTS[:5], [{}] * 5, 0, 2)
    assert editor.edited == ["p0", "p2", "p4"]  # a call's first prompt: calls of 2, 2 and 1
    assert [r["rel"] for r in result.records] == [i / 10 for i in range(5)]
    assert result.n_edits == len(result.edit_seconds) == 5 and result.resumed == 0


def test_report_shows_an_unfinished_run_as_partial(tmp_path):
    out = tmp_path / "runs" / "n6" / "zsre" / "single" / "ROME.json"
    with pytest.raises(Interrupted):
        run(journal_path(out), FakeEditor(fail_at="p4"))
    [partial] = load_runs(tmp_path)
    assert partial["status"] == "partial" and partial["n_scored"] == 4
    assert partial["rel"] == pytest.approx(sum(i / 10 for i in range(4)) / 4)
    assert table_row(partial)[0] == "ROME (partial: 4/6)"
    out.write_text(json.dumps({"status": "failed", "method": "ROME", "set": "zsre", "scenario": "single",
                               "n": 6, "error": "cut off"}))
    assert [r["status"] for r in load_runs(tmp_path)] == ["partial"]  # the journal says more than 'failed'


class FakeSequenceEditor(FakeEditor):
    """'Edits' in place: each edit adds the request's score to weight[0, 0], so the order and count show."""

    def __init__(self, fail_at=None):
        super().__init__(fail_at)
        with torch.no_grad():
            self.model.weight.zero_()

    def apply_algo(self, model, tok, requests, hparams, **kwargs):
        model, weights_copy = super().apply_algo(model, tok, requests, hparams)
        with torch.no_grad():
            model.weight[0, 0] += sum(r["score"] for r in requests)
        return model, weights_copy


def sequence_host(fail_when_scoring_at=None):
    """Scores every request with the model's weight[0, 0]: the sum of all edits made so far."""
    scored = []

    def quality(model, name, hparams, tok, request, device, test_generation=False):
        if request["prompt"] == fail_when_scoring_at and not scored:
            scored.append(request["prompt"])
            raise Interrupted("scoring")
        return {"rewrite_acc": [float(model.weight[0, 0].detach())], "rephrase_acc": [1.0], "locality": {}, "portability": {}}

    return Host(BaseEditor=None, compute_edit_quality=quality, finalize_locality_metrics=lambda *a: None,
                restore_after_edit=lambda *a: None, prepare_requests=None, exact_match=fake_exact_match)


SEQ_HEADER = {**HEADER, "scenario": "seq6", "checkpoints": [2, 4]}


def run_seq(directory, editor, host=None, header=SEQ_HEADER, batch=1, checkpoints=(2, 4)):
    checkpoint = SequenceCheckpoint(directory, header, METHODS["ROME"])
    result = run_sequential(host or sequence_host(), editor, METHODS["ROME"], REQUESTS, [{}] * 6, 0,
                            list(checkpoints), checkpoint, batch)
    return checkpoint, result


def test_cut_off_sequence_resumes_from_its_last_edit_as_if_never_stopped(tmp_path):
    _, whole = run_seq(None, FakeSequenceEditor())
    directory = checkpoint_dir(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run_seq(directory, FakeSequenceEditor(fail_at="p3"))

    editor = FakeSequenceEditor()  # a fresh model, as a new process loads it
    checkpoint, resumed = run_seq(directory, editor)
    assert editor.edited == ["p3", "p4", "p5"]  # nothing redone, nothing skipped
    scores = lambda result: [{k: c[k] for k in ("edits", "rel", "gen", "loc")} for c in result.checkpoints]  # noqa: E731
    assert scores(resumed) == scores(whole)  # scored on the restored weights, not the fresh ones
    assert [r["rel"] for r in resumed.records] == [r["rel"] for r in whole.records] == [1.5] * 6
    assert resumed.n_edits == len(resumed.edit_seconds) == 6 and resumed.resumed == 3
    assert resumed.costs["params_per_edit"] == whole.costs["params_per_edit"] == 4
    checkpoint.done()
    assert not directory.exists()
    assert (final_state_dir(directory) / "weights.safetensors").is_file()  # kept for re-scoring


def test_batched_sequence_edits_in_calls_and_scores_after_the_call_reaching_each_checkpoint(tmp_path):
    directory = checkpoint_dir(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run_seq(directory, FakeSequenceEditor(fail_at="p4"), batch=2, checkpoints=[1, 4])
    editor = FakeSequenceEditor()
    _, result = run_seq(directory, editor, batch=2, checkpoints=[1, 4])
    assert editor.edited == ["p4"]  # the third call of two edits, resumed after the second
    assert [c["edits"] for c in result.checkpoints] == [2, 4, 6]  # 1 falls after the first call
    assert result.checkpoints[0]["rel"] == pytest.approx(0.1)
    assert all(c["seconds_per_edit"] is not None and c["peak_rss_mb"] > 0 for c in result.checkpoints)
    assert len(result.edit_seconds) == 6


@pytest.mark.parametrize("name, kind, size, batch", [
    ("single", "single", 1, 1), ("batch10", "batch", 10, 1), ("seq1000", "seq", 1000, 1),
    ("seqbatch100x10", "seq", 1000, 100)])
def test_scenario_names(name, kind, size, batch):
    scenario = Scenario.parse(name)
    assert (scenario.kind, scenario.size, scenario.batch) == (kind, size, batch)


@pytest.mark.parametrize("name", ["seq", "seqbatch100", "seqbatch0x10", "batch0", "seq-1"])
def test_unknown_scenario_names_are_refused_with_the_forms_that_work(name, capsys):
    import run_benchmarks

    with pytest.raises(ValueError, match="seqbatchBxM"):
        Scenario.parse(name)
    with pytest.raises(SystemExit):  # on the command line: a usage error, no traceback
        run_benchmarks.parse_args(["--scenarios", "single", name])
    assert "seqbatchBxM" in capsys.readouterr().err.splitlines()[-1]


def test_sequence_cut_off_while_scoring_scores_on_resume_without_editing_again(tmp_path):
    directory = checkpoint_dir(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run_seq(directory, FakeSequenceEditor(), host=sequence_host(fail_when_scoring_at="p0"))
    editor = FakeSequenceEditor()
    _, resumed = run_seq(directory, editor)
    assert editor.edited == ["p2", "p3", "p4", "p5"]
    assert [c["edits"] for c in resumed.checkpoints] == [2, 4, 6]
    assert resumed.checkpoints[0]["rel"] == pytest.approx(0.1)  # the model after p0 and p1 only


@pytest.mark.parametrize("kind", ["single", "seq"])
def test_progress_of_other_hparams_is_discarded_not_continued(tmp_path, kind):
    # Resuming another configuration's progress would mix two different runs into one score.
    if kind == "single":
        where, runner, make_editor, header = journal_path(tmp_path / "ROME.json"), run, FakeEditor, HEADER
    else:
        where, runner, make_editor, header = checkpoint_dir(tmp_path / "ROME.json"), run_seq, FakeSequenceEditor, SEQ_HEADER
    with pytest.raises(Interrupted):
        runner(where, make_editor(fail_at="p3"))
    editor = make_editor()
    progress, result = runner(where, editor, header={**header, "hparams": {"layers": [7]}})
    assert progress.discarded_reason
    assert editor.edited == [f"p{i}" for i in range(6)] and result.resumed == 0


def test_report_shows_an_unfinished_sequence_with_its_checkpoint_scores(tmp_path):
    out = tmp_path / "runs" / "n6" / "zsre" / "seq6" / "ROME.json"
    with pytest.raises(Interrupted):
        run_seq(checkpoint_dir(out), FakeSequenceEditor(fail_at="p5"))
    [partial] = load_runs(tmp_path)
    assert (partial["status"], partial["n_edits"]) == ("partial", 5)
    assert [c["edits"] for c in partial["checkpoints"]] == [2, 4]
    assert table_row(partial)[1] == "partial: 5 of 6 edits made; rel / gen / loc after 2: 10.0 / 100.0 / n/a, " \
                                    "after 4: 60.0 / 100.0 / n/a"
    points = curve_points(load_runs(tmp_path), 6, "zsre", "ROME")["rel"]
    assert [k for k, _ in points] == [2, 4] and [v for _, v in points] == pytest.approx([0.1, 0.6])


def test_methods_without_a_saved_state_are_not_checkpointed(tmp_path):
    directory = checkpoint_dir(tmp_path / "WISE.json")
    checkpoint = SequenceCheckpoint(directory, SEQ_HEADER, METHODS["WISE"])
    assert not checkpoint.enabled
    run_sequential(sequence_host(), FakeSequenceEditor(), METHODS["WISE"], REQUESTS, [{}] * 6, 0, [2], checkpoint)
    assert not directory.exists()


def test_baft_sequence_checkpoint_restores_the_edits_exactly(tmp_path):
    from tiny_models import REQUESTS as EDITS, edit, hparams, logits, make_tokenizer, tiny_llama

    tok, model = make_tokenizer(), tiny_llama()
    hp = hparams(grow_rank=2, n_steps=20)
    for request in EDITS[:2]:
        edit(model, tok, request, hp)
    checkpoint = SequenceCheckpoint(tmp_path / "BaFT.partial", SEQ_HEADER, METHODS["BaFT"])
    checkpoint.save(model, {"n_edits": 2}, set())
    fresh = tiny_llama()
    reopened = SequenceCheckpoint(tmp_path / "BaFT.partial", SEQ_HEADER, METHODS["BaFT"])
    assert reopened.restore(fresh, hp) == {"n_edits": 2}
    assert torch.equal(logits(fresh, tok), logits(model, tok))


@pytest.mark.parametrize("path,shown", [
    (REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml", "hparams/BaFT/smollm2-135m.yaml"),
    (REPO_ROOT.parent / "shared" / "data", "../shared/data"),
    (Path.home() / ".cache" / "model", "~/.cache/model"),
    ("results/stats", "results/stats"),
])
def test_results_record_paths_relative_to_the_repository_or_home(path, shown):
    assert portable_path(path) == shown


@pytest.mark.parametrize("source, resolved", [
    ("../data/prompts.json", "data/prompts.json"),  # relative to the YAML's folder, tmp/configs
    ("builtin", "builtin"),
    ("/abs/prompts.txt", "/abs/prompts.txt"),
])
def test_relative_locality_source_is_read_from_the_yaml_folder(tmp_path, monkeypatch, source, resolved):
    # Workers run in a scratch directory, so a relative path must not depend on the working directory.
    shipped = (REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml").read_text()
    path = tmp_path / "configs" / "baft.yaml"
    path.parent.mkdir()
    path.write_text(re.sub(r"(?m)^locality_source: .*$", f"locality_source: {source}", shipped))
    monkeypatch.chdir(tmp_path / "configs")
    expected = str(tmp_path / resolved) if resolved == "data/prompts.json" else resolved
    assert load_hparams(METHODS["BaFT"], path, "model-dir", None).locality_source == expected


def test_a_method_variant_is_its_file_with_the_overrides_applied():
    # ReFT is BaFT's file with every gate open: the override, not the file, decides the gate.
    shipped = REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml"
    assert load_hparams(METHODS["BaFT"], shipped, "model-dir", None).gate == "learned"
    reft = load_hparams(METHODS["ReFT"], shipped, "model-dir", None)
    assert (reft.gate, reft.model_name, reft.device) == ("ones", "model-dir", "cpu")
    assert METHODS["FT-M"].alg_name == "FT" and METHODS["FT-M"].overrides == {"objective_optimization": "target_new"}


class WorkerEditor(FakeEditor):
    """The host's BaseEditor(hparams) for the worker: counts every edit made, in any instance."""

    made = []

    def __init__(self, hparams):
        super().__init__()
        self.hparams = hparams

    def apply_algo(self, model, tok, requests, hparams, **kwargs):
        WorkerEditor.made.append((requests[0]["prompt"], hparams.layers))
        return super().apply_algo(model, tok, requests, hparams)


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """run_method on a stand-in host and editor: real runner, spec, skip and report code."""
    import bench_worker
    import easyedit_baft.model_loading as model_loading
    import run_benchmarks

    data = tmp_path / "data" / "zsre"
    data.mkdir(parents=True)
    records = [{"src": f"Who made Q{i}?", "alt": "A", "answers": ["B"], "rephrase": f"Q{i} was made by?",
                "subject": f"Q{i}", "loc": "nq?", "loc_ans": "x"} for i in range(2)]
    (data / "zsre_mend_eval_portability_gpt4.json").write_text(json.dumps(records))
    model = tmp_path / "model-llama"
    model.mkdir()
    (model / "config.json").write_text("{}")
    hparams_file = tmp_path / "rome.yaml"

    def load_hparams(spec, path, model_dir, stats_dir, batch_size=1):
        import yaml

        return SimpleNamespace(alg_name="ROME", device="cpu", model_name=model_dir, **yaml.safe_load(path.read_text()))

    def quality(model, name, hparams, tok, request, device, test_generation=False):
        return {"rewrite_acc": [1.0], "rephrase_acc": [1.0], "locality": {}, "portability": {}}

    host = dict(BaseEditor=WorkerEditor, compute_edit_quality=quality, finalize_locality_metrics=lambda *a: None,
                restore_after_edit=lambda *a: None,
                prepare_requests=lambda p, t, g, **k: [{"prompt": q, "target_new": a} for q, a in zip(p, t)],
                exact_match=fake_exact_match, locality_continuations=lambda *a: {})
    monkeypatch.setattr(Host, "load", staticmethod(lambda: Host(**host)))
    monkeypatch.setattr(bench_worker, "load_hparams", load_hparams)
    monkeypatch.setattr(model_loading, "resolve_model_path", lambda name: str(model))
    WorkerEditor.made = []

    def run(layers, *extra):
        hparams_file.write_text(f"layers: {layers}\n")
        args = run_benchmarks.parse_args(["--worker", "ROME", "--methods", "ROME", "--model", str(model),
                                          "--data-dir", str(tmp_path / "data"), "--n", "2", "--sets", "zsre",
                                          "--scenarios", "single", "--results-dir", str(tmp_path / "results"),
                                          "--hparams", f"ROME={hparams_file}", *extra])
        made = len(WorkerEditor.made)
        assert bench_worker.run_method(args) == 0
        return WorkerEditor.made[made:], tmp_path / "results" / "runs" / "n2" / "zsre" / "single" / "ROME.json"

    return run


def test_worker_redoes_a_changed_config_and_skips_the_same_one(worker, capsys):
    made, out = worker([5])
    assert made == [("Who made Q0?", [5]), ("Who made Q1?", [5])]
    first = json.loads(out.read_text())
    assert first["hparams"]["layers"] == [5] and len(first["run_key"]) == 16
    assert worker([5])[0] == []  # the same spec: its finished result is kept
    made, _ = worker([6])  # another config under the same name: really redone, not kept
    assert made == [("Who made Q0?", [6]), ("Who made Q1?", [6])]
    second = json.loads(out.read_text())
    assert second["hparams"]["layers"] == [6] and second["run_key"] != first["run_key"]
    capsys.readouterr()
    assert worker([6], "--force")[0] != []
    assert "redone because of --force" in capsys.readouterr().out


def test_worker_keys_on_the_data_and_the_pre_edit_cache_follows(worker, tmp_path):
    worker([5])
    path = tmp_path / "data" / "zsre" / "zsre_mend_eval_portability_gpt4.json"
    records = json.loads(path.read_text())
    records[1]["alt"] = "C"
    path.write_text(json.dumps(records))
    assert len(worker([5])[0]) == 2  # the same n and hparams, other data: redone
    assert len(list((tmp_path / "results" / "pre_cache").glob("*.json"))) == 2


def test_a_result_from_before_run_keys_is_redone_and_the_report_still_reads_it(worker):
    _, out = worker([5])
    legacy = json.loads(out.read_text())
    for field in ("run_key", "run_spec"):
        legacy.pop(field)
    out.write_text(json.dumps(legacy))
    [shown] = load_runs(out.parents[4])
    assert shown["status"] == "ok" and "run_key" not in shown  # the report reads it until it is redone
    assert len(worker([5])[0]) == 2


def test_a_finished_sequence_scored_before_em_is_rescored_from_its_kept_state_not_edited_again(worker, tmp_path):
    made, _ = worker([5], "--scenarios", "seq2")
    assert len(made) == 2
    out = tmp_path / "results" / "runs" / "n2" / "zsre" / "seq2" / "ROME.json"
    result = json.loads(out.read_text())
    assert result["em"]["rel"] == 0.5  # fake_exact_match: 0 for Q0, 1 for Q1
    for record in result["records"]:
        record.pop("em")
    result.pop("em")
    out.write_text(json.dumps(result))
    assert worker([5], "--scenarios", "seq2")[0] == []  # nothing edited again
    rescored = json.loads(out.read_text())
    assert rescored["em"]["rel"] == 0.5 and [r["em"]["rel"] for r in rescored["records"]] == [0.0, 1.0]
    assert rescored["run_key"] == result["run_key"] and "em_rescored" in rescored


def test_a_finished_single_run_scored_before_em_is_redone(worker):
    _, out = worker([5])
    result = json.loads(out.read_text())
    result.pop("em")
    out.write_text(json.dumps(result))
    assert len(worker([5])[0]) == 2  # single edits keep no state to re-score


def test_a_worker_parses_the_drivers_own_command_line_from_anywhere(tmp_path, monkeypatch):
    import run_benchmarks

    monkeypatch.chdir(tmp_path)
    driver = run_benchmarks.parse_args(["--n", "3", "--sets", "zsre", "--results-dir", "out", "--scenarios",
                                        "seq10", "--hparams", "ROME=rome.yaml", "--methods", "BaFT", "ROME"])
    command = run_benchmarks.worker_command(driver, "ROME")
    worker = run_benchmarks.parse_args(command[2:])  # started where the driver runs, before it moves
    assert all(Path(p).is_absolute() for p in (worker.results_dir, worker.data_dir, worker.baft_hparams))
    assert (worker.worker, worker.methods) == ("ROME", ["ROME"])
    assert worker.results_dir == tmp_path / "out" and worker.hparams == {"ROME": tmp_path / "rome.yaml"}
    same = {k: v for k, v in vars(driver).items() if k not in ("worker", "methods", "argv")}
    assert same == {k: v for k, v in vars(worker).items() if k in same}


def test_a_field_added_later_enters_the_run_key_only_where_it_acts():
    from easyedit_baft.hparams import BaFTHyperParams
    shipped = dataclasses.replace(BaFTHyperParams.from_hparams(REPO_ROOT / "hparams/BaFT/smollm2-135m.yaml"),
                                  rank_per_request=False, batch_size=10)
    assert "rank_per_request" not in hparams_record(shipped)  # results keyed before it keep their keys
    per_request = dataclasses.replace(shipped, rank_per_request=True)
    assert hparams_record(per_request)["rank_per_request"] is True
    assert "rank_per_request" not in hparams_record(dataclasses.replace(per_request, batch_size=1))  # one request


def test_committed_results_name_no_absolute_path():
    """Committed results name paths relative to the repository (or ~), never one machine's absolute path."""
    results = REPO_ROOT / "benchmarks" / "results"
    kept = [p for p in results.glob("**/runs/**/*.json") if not any(part.endswith((".state", ".partial"))
                                                                   for part in p.parts)]  # those are ignored
    for path in [results / "results.json", *kept]:
        absolute = re.findall(r'"(/[^"]*)"', path.read_text())
        assert not absolute, (f"{path.relative_to(REPO_ROOT)} names an absolute path, {absolute[0]!r}; "
                              "record it relative to the repository")


def test_the_redo_message_names_a_field_added_since_the_result_was_made():
    spec = RunSpec("BaFT", "zsre", "single", 2, {"layers": [5], "cap_locality": 0.03}, "d", "m", {})
    saved = {"run_key": "old", "hparams": {"layers": [5]}, "run_spec": spec.record()["run_spec"]}
    assert changed_fields(saved, spec) == ["cap_locality: None -> 0.03"]
    assert changed_fields({**saved, "hparams": {"layers": [4]}}, dataclasses.replace(spec, hparams={"layers": [5]})) == [
        "layers: [4] -> [5]"]
