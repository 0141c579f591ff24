"""Editing scenarios (single, batch, sequential) through the host's `apply_algo`, called as its `edit` calls it,
and scored by its `compute_edit_quality`, with the host (an EasyEdit checkout) imported and BaFT registered.
A sequence is scored on all its edits so far, not each right after it is made as the host's sequential mode
does: do earlier edits still hold?"""

import argparse
import contextlib
import copy
import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from tqdm.auto import tqdm

from bench_methods import CostMeter
from bench_progress import Journal, SequenceCheckpoint
from easyedit_baft.metrics import exact_match, fluency_without_punkt, locality_continuations, mean, record_scores

EM_LOCALITY = "em_locality"  # in a pre-edit output: the unedited model's greedy locality continuations
SCORES = ("rel", "gen", "loc", "port")
SCENARIO_PATTERN = re.compile(r"^(single|batch(\d+)|seq(\d+)|seqbatch(\d+)x(\d+))$")


@dataclass
class Host:
    """The host functions a scenario needs, so every definition stays EasyEdit's (tests pass stand-ins)."""

    BaseEditor: object
    compute_edit_quality: object
    finalize_locality_metrics: object
    restore_after_edit: object
    prepare_requests: object
    # The project's generation-based scores, applied to every method alike (metrics.exact_match).
    exact_match: object = exact_match
    locality_continuations: object = locality_continuations

    @staticmethod
    def load() -> "Host":
        """Import easyeditor (EASYEDIT_ROOT first on sys.path when set), register BaFT into it, and take its
        editor, evaluation, request builder and restore."""
        root = os.environ.get("EASYEDIT_ROOT")
        if root:
            if not (Path(root) / "easyeditor").is_dir():
                raise RuntimeError(f"EASYEDIT_ROOT={root!r} has no easyeditor/ folder; name an EasyEdit checkout")
            sys.path.insert(0, str(Path(root).resolve()))
        import easyedit_baft

        try:
            import easyeditor  # noqa: F401
        except ImportError as err:
            raise RuntimeError(f"cannot import easyeditor ({err}); set EASYEDIT_ROOT to an EasyEdit checkout and use a "
                               "venv where its requirements import (docs/HOST_INTEGRATION.md)") from err
        if not easyedit_baft.register_with_host():  # 'BaFT' into ALG_DICT, the restore set and the batch check
            raise RuntimeError("'BaFT' is not in easyeditor's ALG_DICT after registering it; install a version of "
                               "easyedit_baft whose registration covers this EasyEdit (easyedit_baft/host.py)")
        fluency_without_punkt()  # the host's fluency needs NLTK data an offline machine may lack
        from easyeditor.editors.editor import BaseEditor, finalize_locality_metrics
        from easyeditor.editors.utils import _prepare_requests, restore_after_edit
        from easyeditor.evaluate import compute_edit_quality

        return Host(BaseEditor, compute_edit_quality, finalize_locality_metrics, restore_after_edit, _prepare_requests)


@dataclass
class Scenario:
    name: str
    kind: str  # 'single', 'batch' or 'seq'
    size: int  # edits per batch, or edits in the sequence
    batch: int = 1  # seq: edits per call (seqbatchBxM makes M calls of B edits, nothing undone between)

    @property
    def edits_per_call(self) -> int:
        return self.size if self.kind == "batch" else self.batch

    @staticmethod
    def parse(name: str) -> "Scenario":
        match = SCENARIO_PATTERN.match(name)
        if not match or 0 in [int(g) for g in match.groups()[1:] if g is not None]:
            raise ValueError(f"scenario {name!r} is unknown; use single, batchK, seqT or seqbatchBxM "
                             f"(e.g. batch10, seq1000, seqbatch100x10), with K, T, B, M >= 1")
        _, batch, seq, seq_batch, calls = match.groups()
        if batch or name == "single":
            return Scenario(name, "batch" if batch else "single", int(batch or 1))
        return Scenario(name, "seq", int(seq or seq_batch) * int(calls or 1), int(seq_batch or 1))


def scenario_arg(name: str) -> Scenario:
    """Scenario.parse as an argparse type: a misspelt name is a usage error, not a traceback."""
    try:
        return Scenario.parse(name)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@dataclass
class ScenarioResult:
    records: List[dict] = field(default_factory=list)  # per evaluated request: its scores (record_scores)
    edit_seconds: List[float] = field(default_factory=list)  # wall time of each apply_algo call, per edit
    n_edits: int = 0
    costs: dict = field(default_factory=dict)
    checkpoints: List[dict] = field(default_factory=list)  # sequential: scores after k edits
    resumed: int = 0  # edits (sequential) or records (single) taken from a cut-off run's progress
    resumed_seconds: float = 0.0  # the wall time that cut-off run spent on them


def lifetime_peak_mb() -> float:
    """ru_maxrss: the process's peak RSS so far (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def status_mb(field: str):
    """A memory field of /proc/self/status in MB (VmRSS: resident now, VmHWM: its peak); None off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":")), None)


@contextlib.contextmanager
def peak_memory():
    """The peak RSS within a `with` block, in the dict it yields: getrusage never resets (after a first scenario
    it would give that one's peak for every later one), but Linux lets a process reset its high-water mark."""
    block_peak_supported = False
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        block_peak_supported = True
    report = {}
    yield report
    report.update(block_peak_mb=status_mb("VmHWM") if block_peak_supported else None,
                  getrusage_peak_mb=lifetime_peak_mb())


def evaluate(host: Host, editor, model, request: dict, pre: dict, fluency: bool) -> dict:
    """Scores of one request on `model`, two ways: the host's teacher-forced metrics (locality against
    `pre`), and generation-based exact match as `em` (locality against pre's greedy continuations)."""
    em = host.exact_match(model, editor.tok, request, pre.get(EM_LOCALITY))
    post = host.compute_edit_quality(model, editor.model_name, editor.hparams, editor.tok, request,
                                     editor.hparams.device, test_generation=fluency)
    metric = {"pre": copy.deepcopy(pre), "post": post}
    host.finalize_locality_metrics(metric, request, editor.hparams, editor.model_name)
    return {**record_scores(metric["post"]), "em": em}


def open_editor(host: Host, spec, hparams):
    """The host's BaseEditor for one method, made ready to be scored."""
    editor = host.BaseEditor(hparams)
    if spec.adapter.scored_by_generation:
        # The host scores by generating len(target) tokens and comparing them with the target's: an EOS first
        # made the shapes differ and numpy raise (ZsRE record 67, SmolLM2). Without the stop it is a wrong token.
        editor.model.generation_config.eos_token_id = None
    return editor


def pre_edit_metrics(host: Host, editor, requests: List[dict], cached: Optional[List[dict]] = None) -> List[dict]:
    """The unedited model's outputs (locality is scored as agreement with them) and its greedy continuations
    of the locality prompts (EM_LOCALITY), added to `cached` outputs made before generation-based scoring."""
    pres = cached or [host.compute_edit_quality(editor.model, editor.model_name, editor.hparams, editor.tok, r,
                                                editor.hparams.device, test_generation=False)
                      for r in tqdm(requests, desc="pre-edit", leave=False)]
    for pre, request in zip(tqdm(pres, desc="pre-edit continuations", leave=False), requests):
        if EM_LOCALITY not in pre:
            pre[EM_LOCALITY] = host.locality_continuations(editor.model, editor.tok, request)
    return pres


def mean_scores(scores: List[dict]) -> dict:
    means = {key: mean([s[key] for s in scores]) for key in (*SCORES, "fluency")}
    means["em"] = {key: mean([(s.get("em") or {}).get(key) for s in scores]) for key in SCORES}
    return means


def apply_edit(editor, requests: List[dict]):
    """One call of the method, exactly as the host's BaseEditor.edit makes it; returns (model, copy, seconds)."""
    start = time.perf_counter()
    edited_model, weights_copy = editor.apply_algo(editor.model, editor.tok, requests, editor.hparams, copy=False,
                                                   return_orig_weights=True, keep_original_weight=False, train_ds=None)
    return edited_model, weights_copy, time.perf_counter() - start


def run_undone(host, editor, spec, requests, pres, fluency_n, batch_size: int = 1,
               journal: Optional[Journal] = None) -> ScenarioResult:
    """Requests edited batch_size at a time on the unedited model, scored, then undone (the host's restore);
    records a journal already holds are taken from it, and each new one is added to it."""
    journal = journal or Journal(None, {})
    resumed = list(journal.entries.values())
    starts = [i for i in range(0, len(requests), batch_size) if i not in journal.entries]
    for start in tqdm(starts, desc=f"{spec.name} " + ("single" if batch_size == 1 else f"batch{batch_size}")):
        started = time.perf_counter()
        call = range(start, min(start + batch_size, len(requests)))
        edited_model, weights_copy, seconds = apply_edit(editor, [requests[i] for i in call])
        meter = CostMeter(spec)
        meter.after_edit(spec.adapter.unwrap(edited_model), weights_copy, len(call))
        costs = meter.summary(spec.adapter.unwrap(edited_model), len(call))
        scores = [evaluate(host, editor, edited_model, requests[i], pres[i], fluency=i < fluency_n) for i in call]
        host.restore_after_edit(editor, edited_model, weights_copy)
        for i, score in zip(call, scores):
            journal.record(i, {"prompt": requests[i]["prompt"], "scores": score, "edit_seconds": seconds / len(call),
                               "costs": costs, "seconds": (time.perf_counter() - started) / len(call)})
    entries = [journal.entries[i] for i in sorted(journal.entries)]
    costs = {key: mean([e["costs"].get(key) for e in entries]) for key in {k for e in entries for k in e["costs"]}}
    return ScenarioResult(records=[e["scores"] for e in entries], edit_seconds=[e["edit_seconds"] for e in entries],
                          n_edits=len(entries), costs=costs,
                          resumed=len(resumed), resumed_seconds=sum(e["seconds"] for e in resumed))


def checkpoint_steps(total: int, requested: List[int], batch: int = 1) -> List[int]:
    """Sequence lengths at which all edits so far are scored (the last one always included);
    in a batched sequence a checkpoint falls after the call that reaches it."""
    return sorted({min(total, -(-k // batch) * batch) for k in requested if 0 < k < total} | {total})


def run_sequential(host, editor, spec, requests, pres, fluency_n, checkpoints,
                   checkpoint: Optional[SequenceCheckpoint] = None, batch: int = 1) -> ScenarioResult:
    """Requests edited `batch` at a time, one call after another on the same model (nothing undone), all
    edits so far scored at the checkpoints; a checkpoint saves progress after every call, to continue from."""
    checkpoint = checkpoint or SequenceCheckpoint(None, {}, spec)
    result, meter = ScenarioResult(), CostMeter(spec)
    saved = checkpoint.restore(editor.model, editor.hparams)  # a cut-off run's edited state, onto the fresh model
    if saved is not None:
        result.n_edits, result.edit_seconds = saved["n_edits"], list(saved["edit_seconds"])
        result.checkpoints = list(saved["checkpoints"])
        result.resumed, result.resumed_seconds = saved["n_edits"], saved["seconds"]
        meter.per_edit_params, meter.changed_names = list(saved["per_edit_params"]), set(saved["changed_names"])
    started = time.perf_counter()
    steps = checkpoint_steps(len(requests), checkpoints, batch)

    def save(model, new_state):
        bookkeeping = {"n_edits": result.n_edits, "edit_seconds": list(result.edit_seconds),
                       "checkpoints": list(result.checkpoints), "per_edit_params": list(meter.per_edit_params),
                       "changed_names": sorted(meter.changed_names),
                       "seconds": result.resumed_seconds + time.perf_counter() - started}
        checkpoint.save(model, bookkeeping, meter.changed_names, new_state)

    def score_if_due(model, k):
        if k not in steps or any(c["edits"] == k for c in result.checkpoints):
            return
        final = k == len(requests)
        since = result.checkpoints[-1]["edits"] if result.checkpoints else 0
        cost = {"seconds_per_edit": mean(result.edit_seconds[:k]),
                "seconds_per_edit_since_last": mean(result.edit_seconds[since:k]),
                "peak_rss_mb": lifetime_peak_mb(), "rss_mb": status_mb("VmRSS")}
        pairs = tqdm(list(zip(requests[:k], pres[:k])), desc=f"score {k} edits", leave=False)
        metrics = [evaluate(host, editor, model, r, p, fluency=final and i < fluency_n)
                   for i, (r, p) in enumerate(pairs)]
        result.checkpoints.append({"edits": k, **mean_scores(metrics), **cost})
        if final:
            result.records = metrics
        else:
            save(model, new_state=False)

    edited_model = spec.adapter.as_host_returns(editor)
    score_if_due(edited_model, result.n_edits)  # a run may have been cut off between an edit and its scoring
    for start in tqdm(range(result.n_edits, len(requests), batch), desc=f"{spec.name} seq{len(requests)}"):
        call = requests[start: start + batch]
        edited_model, weights_copy, seconds = apply_edit(editor, call)
        result.edit_seconds.extend([seconds / len(call)] * len(call))
        meter.after_edit(spec.adapter.unwrap(edited_model), weights_copy, len(call))
        if spec.adapter.keeps_returned_model:  # as the host's sequential mode keeps LoRA's PEFT wrapper
            editor.model = edited_model
        result.n_edits = start + len(call)
        save(edited_model, new_state=True)
        score_if_due(edited_model, result.n_edits)
    result.costs = meter.summary(spec.adapter.unwrap(edited_model), result.n_edits)
    return result


def run_scenario(host, editor, spec, scenario: Scenario, requests, pres, fluency_n, checkpoints,
                 progress=None) -> ScenarioResult:
    """progress: the single-edit Journal or the SequenceCheckpoint that lets a cut-off run resume."""
    if scenario.kind != "seq":
        return run_undone(host, editor, spec, requests, pres, fluency_n, scenario.size, progress)
    return run_sequential(host, editor, spec, requests[: scenario.size], pres[: scenario.size],
                          fluency_n, checkpoints, progress, scenario.batch)
