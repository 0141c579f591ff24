"""The benchmark runner's bookkeeping: the single-edit journal (a cut-off run resumes without redoing
or losing records) and results that record no machine-specific paths."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_journal import Journal, journal_path  # noqa: E402
from bench_methods import METHODS  # noqa: E402
from bench_report import load_runs, table_row  # noqa: E402
from bench_scenarios import Host, run_single  # noqa: E402
from bench_worker import REPO_ROOT, portable_path  # noqa: E402


class Interrupted(Exception):
    pass


class FakeEditor:
    """Stands in for the host's BaseEditor: 'edits' by recording the prompt, fails on request."""

    def __init__(self, fail_at=None):
        self.model = torch.nn.Linear(2, 2)
        self.model_name, self.tok = "fake", None
        self.hparams = type("HP", (), {"device": "cpu"})()
        self.edited, self.fail_at = [], fail_at

    def apply_algo(self, model, tok, requests, hparams, **kwargs):
        if requests[0]["prompt"] == self.fail_at:
            raise Interrupted(requests[0]["prompt"])
        self.edited.append(requests[0]["prompt"])
        return model, {"weight": model.weight.detach().clone()}


def fake_host():
    def quality(model, name, hparams, tok, request, device, test_generation=False):
        # rewrite_acc depends on the request, so a mixed-up or repeated record changes the mean.
        return {"rewrite_acc": [request["score"]], "rephrase_acc": [1.0], "locality": {}, "portability": {}}

    return Host(BaseEditor=None, compute_edit_quality=quality, finalize_locality_metrics=lambda *a: None,
                restore_after_edit=lambda *a: None, prepare_requests=None)


REQUESTS = [{"prompt": f"p{i}", "target_new": "t", "score": i / 10} for i in range(6)]
HEADER = {"method": "ROME", "set": "zsre", "scenario": "single", "n": 6}


def run(path, editor, header=HEADER):
    journal = Journal(path, header)
    return journal, run_single(fake_host(), editor, METHODS["ROME"], REQUESTS, [{}] * 6, 0, journal)


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


def test_journal_of_other_hparams_is_discarded_not_mixed_in(tmp_path):
    path = journal_path(tmp_path / "ROME.json")
    with pytest.raises(Interrupted):
        run(path, FakeEditor(fail_at="p2"))
    editor = FakeEditor()
    journal, result = run(path, editor, header={**HEADER, "hparams": {"layers": [7]}})
    assert journal.discarded_reason
    assert editor.edited == [f"p{i}" for i in range(6)]


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


@pytest.mark.parametrize("path,shown", [
    (REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml", "hparams/BaFT/smollm2-135m.yaml"),
    (REPO_ROOT.parent / "shared" / "data", "../shared/data"),
    (Path.home() / ".cache" / "model", "~/.cache/model"),
    ("results/stats", "results/stats"),
])
def test_results_record_paths_relative_to_the_repository_or_home(path, shown):
    assert portable_path(path) == shown
