"""One method's share of a benchmark run: every data set and scenario, each saved as soon as it ends."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import numpy as np

from bench_data import build_requests, training_loc_prompts
from bench_host import generate_full_length, import_host, metric_functions, scored_by_generation
from bench_memory import PeakMemory
from bench_methods import MethodSpec, load_hparams
from bench_checkpoint import SequenceCheckpoint, checkpoint_dir
from bench_journal import Journal, journal_path
from bench_scenarios import Host, Scenario, mean_scores, pre_edit_metrics, run_scenario


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: Path, data) -> None:
    """Write beside the target, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(data, indent=1, default=_json_default))
    staging.replace(path)


def resolve_stats_dir(args, hparams_file: Path):
    """--stats-dir, else the hparams' own stats_dir; a relative one is read from the repo root."""
    if args.stats_dir is not None:
        return args.stats_dir.resolve()
    import yaml

    configured = (yaml.safe_load(hparams_file.read_text()) or {}).get("stats_dir")
    if not configured:
        return None
    path = Path(configured)
    return path if path.is_absolute() else (Path(__file__).resolve().parent.parent / path).resolve()


def _pre_cache_path(args, data_set: str, alg_name: str) -> Path:
    # A method scored by generation has other pre-edit outputs than the teacher-forced ones.
    mode = "generate" if scored_by_generation(alg_name) else "teacher"
    tag = Path(str(args.model)).name
    return args.results_dir / "pre_cache" / f"{tag}__{data_set}__n{args.n}__{mode}.json"


def pre_edit(args, host: Host, editor, spec: MethodSpec, data_set: str, requests):
    """Pre-edit metrics, shared between methods through a cache file (they depend only on the model)."""
    path = _pre_cache_path(args, data_set, spec.alg_name)
    if path.is_file():
        cached = json.loads(path.read_text())
        if len(cached) == len(requests):
            return cached
    pres = json.loads(json.dumps(pre_edit_metrics(host, editor, requests), default=_json_default))
    write_json(path, pres)
    return pres


def _slim_record(scores: dict, request: dict) -> dict:
    """What is kept per request: its text and its scores (the host's full metric dicts are large)."""
    return {"prompt": request["prompt"], "target_new": request["target_new"], **scores}


REPO_ROOT = Path(__file__).resolve().parent.parent
PATH_FIELDS = ("model_name", "stats_dir", "locality_source", "P_loc")


def portable_path(value) -> str:
    """A path as results may record it: relative to the repository, or under ~, not this machine's."""
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        return str(value)
    # As written and with links resolved: ../shared may itself be a link to elsewhere.
    forms = {Path(os.path.abspath(path)), path.resolve()}
    for root, shown in ((REPO_ROOT, None), (REPO_ROOT.parent, ".."), (Path.home(), "~")):
        if root == Path(root.anchor):
            continue  # everything is under '/': that says nothing
        for form in forms:
            for base in {Path(os.path.abspath(root)), root.resolve()}:
                if form.is_relative_to(base):
                    relative = form.relative_to(base)
                    return str(relative) if shown is None else str(Path(shown) / relative)
    return str(value)


def hparams_record(hparams) -> dict:
    """The hparams as the run used them (file values plus the benchmark's overrides)."""
    fields = dict(vars(hparams))
    for name in PATH_FIELDS:
        if isinstance(fields.get(name), (str, Path)):
            fields[name] = portable_path(fields[name])
    return json.loads(json.dumps(fields, default=_json_default))


# Fields the benchmark sets itself (load_hparams), so a file's value there says nothing about a run.
RUN_SET_FIELDS = ("model_name", "device", "batch_size", "stats_dir")


def _same_value(recorded, value) -> bool:
    # PyYAML reads '5e-1' as a string; the hparams classes hold the number it names.
    if isinstance(value, str) and isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        try:
            return float(value) == recorded
        except ValueError:
            return False
    return value == recorded


def hparams_changes(spec: MethodSpec, hparams_file: Path, recorded: dict) -> list:
    """'field: recorded -> file' for each field of hparams_file that a saved result was not made with."""
    import yaml

    from easyedit_baft.hparams.baft_hparams import locality_source_from_file

    values = dict(yaml.safe_load(hparams_file.read_text()) or {})
    values.update(spec.baft_overrides)
    changes = []
    for name, value in values.items():
        if name in RUN_SET_FIELDS or name not in recorded:
            continue
        # Relative paths as the run resolved them, and as its record writes them.
        if name == "locality_source" and value != (resolved := locality_source_from_file(value, hparams_file)):
            value = portable_path(resolved)
        elif name == "P_loc" and isinstance(value, str) and not Path(value).expanduser().is_absolute():
            value = portable_path(REPO_ROOT / value)
        value = json.loads(json.dumps(value, default=_json_default))
        if not _same_value(recorded[name], value):
            changes.append(f"{name}: {recorded[name]!r} -> {value!r}")
    return changes


def summarise(spec, scenario, data_set, args, result, peak, hparams, hparams_file, seconds) -> dict:
    scores = mean_scores(result.records)
    edit_seconds = result.edit_seconds
    return {
        "status": "ok", "method": spec.name, "alg_name": spec.alg_name, "set": data_set,
        "scenario": scenario.name, "n": args.n, "n_edits": result.n_edits,
        "n_scored": len(result.records), **scores,
        "seconds_per_edit": float(np.mean(edit_seconds)) if edit_seconds else None,
        "edit_seconds_total": float(np.sum(edit_seconds)), "wall_seconds": seconds,
        **result.costs,
        "peak_mb": peak.get("block_peak_mb") or peak.get("getrusage_peak_mb"), "memory": peak,
        "checkpoints": result.checkpoints, "hparams_file": portable_path(hparams_file), "hparams": hparams_record(hparams),
        "fluency_n": min(args.fluency_n, len(result.records)),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        # Records or edits taken from an earlier, cut-off run: wall_seconds includes theirs, peak memory not.
        "resumed_records": result.resumed,
        "records": [_slim_record(m, r) for m, r in zip(result.records, result.requests)],
    }


def open_progress(args, spec, data_set, scenario, hparams, out: Path):
    """What lets a cut-off run resume: the single-edit journal, or a sequence's checkpoint (None for batches)."""
    if scenario.kind == "batch":
        return None
    header = {"method": spec.name, "set": data_set, "scenario": scenario.name, "n": args.n,
              "data_dir": portable_path(args.data_dir.resolve()), "fluency_n": args.fluency_n,
              "hparams": hparams_record(hparams)}
    if scenario.kind == "seq":
        header["checkpoints"] = list(args.checkpoints)
    header = json.loads(json.dumps(header, default=_json_default))
    where = f"[{spec.name}] {data_set} {scenario.name}"
    if scenario.kind == "single":
        progress = Journal(journal_path(out), header)
        done = len(progress.entries)
    else:
        progress = SequenceCheckpoint(checkpoint_dir(out), header, spec.alg_name)
        done = progress.progress["bookkeeping"]["n_edits"] if progress.progress else 0
        if not progress.enabled:
            print(f"{where}: {spec.alg_name}'s edited state is not saved between edits; a cut-off run starts over",
                  flush=True)
    if progress.discarded_reason:
        print(f"{where}: earlier progress discarded: {progress.discarded_reason}", flush=True)
    elif done:
        print(f"{where}: resuming after {done} finished edits", flush=True)
    return progress


def run_one(args, host, spec, hparams_file, stats_dir, data_set, scenario, requests, out: Path):
    """Fresh model, pre-edit outputs, the scenario; returns the summary dict and the run's progress."""
    started = time.time()
    batch_size = scenario.size if scenario.kind == "batch" else 1
    hparams = load_hparams(spec, hparams_file, args.model_dir, stats_dir, batch_size)
    progress = open_progress(args, spec, data_set, scenario, hparams, out)
    with PeakMemory() as peak:
        editor = host.BaseEditor(hparams)
        if scored_by_generation(spec.alg_name):  # the host generates len(target) tokens to score
            generate_full_length(editor.model)
        pres = pre_edit(args, host, editor, spec, data_set, requests)
        result = run_scenario(host, editor, spec, scenario, requests, pres, args.fluency_n, args.checkpoints,
                              progress)
    result.requests = requests[: len(result.records)]
    del editor
    summary = summarise(spec, scenario, data_set, args, result, peak.report(), hparams, hparams_file,
                        time.time() - started + result.resumed_seconds)
    return summary, progress


def _skip_reason(args, spec: MethodSpec, scenario: Scenario, n: int):
    allowed = args.scenario_limits.get(spec.name)
    if allowed is not None and scenario.name not in allowed:
        return f"not run: --scenarios-for limited {spec.name} to {','.join(allowed)} (time budget)"
    if scenario.kind == "batch" and not spec.batchable:
        return f"{spec.name} is not batchable in the host (BatchEditor.is_batchable_method)"
    if scenario.kind == "seq" and scenario.size > n:
        return f"{scenario.name} needs at least {scenario.size} records; --n is {n}"
    return None


def run_method(args, spec: MethodSpec, hparams_file: Path, result_path) -> int:
    from easyedit_baft.model_loading import resolve_model_path

    import torch

    torch.set_num_threads(args.threads)
    import_host()
    host = Host(**metric_functions())
    args.model_dir = resolve_model_path(args.model)
    stats_dir = resolve_stats_dir(args, hparams_file) if hparams_file.is_file() else None
    failed = 0
    for data_set in args.sets:
        loc_prompts = training_loc_prompts(args.data_dir, args.n) if spec.takes_loc_prompts else None
        prepare = host.prepare_requests
        if loc_prompts:
            prepare = lambda *a, **k: host.prepare_requests(*a, loc_prompts=loc_prompts, **k)  # noqa: E731
        requests = build_requests(prepare, args.data_dir, data_set, args.n)
        for name in args.scenarios:
            scenario = Scenario.parse(name)
            out = result_path(args.results_dir, args.n, spec.name, data_set, name)
            if out.is_file() and not args.force:
                saved = json.loads(out.read_text())
                if saved.get("n") == args.n and saved.get("status") == "ok":
                    continue
            reason = _skip_reason(args, spec, scenario, args.n)
            if reason:
                write_json(out, {"status": "skipped", "method": spec.name, "set": data_set,
                                 "scenario": name, "n": args.n, "reason": reason})
                continue
            print(f"[{spec.name}] {data_set} {name}: start {time.strftime('%H:%M:%S')}", flush=True)
            try:
                summary, progress = run_one(args, host, spec, hparams_file, stats_dir, data_set, scenario,
                                           requests, out)
            except Exception as err:
                traceback.print_exc()
                failed += 1
                write_json(out, {"status": "failed", "method": spec.name, "set": data_set, "scenario": name,
                                 "n": args.n, "error": f"{type(err).__name__}: {err}"})
                continue
            write_json(out, summary)
            if progress:
                progress.done()
            print(f"[{spec.name}] {data_set} {name}: rel={summary['rel']} gen={summary['gen']} "
                  f"loc={summary['loc']} port={summary['port']} s/edit={summary['seconds_per_edit']:.2f} "
                  f"wall={summary['wall_seconds']:.0f}s", flush=True)
    return 1 if failed else 0
