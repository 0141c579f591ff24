"""One method's share of a benchmark run: every data set and scenario, each saved as soon as it ends."""

import functools
import itertools
import json
import os
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import easyedit_baft.model_loading as model_loading
from bench_data import build_requests, data_hash, training_loc_prompts
from bench_host import Host
from bench_memory import peak_memory
from bench_methods import REPO_ROOT, MethodSpec, load_hparams
from bench_progress import Journal, SequenceCheckpoint, checkpoint_dir, final_state_dir, journal_path
from bench_scenarios import (EM_LOCALITY, Scenario, checkpoint_steps, mean_scores, open_editor,
                             pre_edit_metrics, run_scenario)
from bench_spec import RunSpec, changed_fields, finished_result, model_fingerprint

PATH_FIELDS = ("model_name", "stats_dir", "locality_source", "P_loc")


def _json_default(value):
    return value.tolist() if isinstance(value, (np.generic, np.ndarray)) else str(value)


def _plain(data):
    """As it reads back from JSON (numpy numbers as numbers, anything else unknown as its text)."""
    return json.loads(json.dumps(data, default=_json_default))


def write_json(path: Path, data) -> None:
    """Write beside the target, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(data, indent=1, default=_json_default))
    staging.replace(path)


def pre_edit(args, host: Host, editor, spec: MethodSpec, run: RunSpec, requests):
    """Pre-edit metrics, shared between methods through a cache file keyed by model, data and n."""
    # They also depend on the scoring: a method scored by generation has its own.
    mode = "generate" if spec.adapter.scored_by_generation else "teacher"
    path = args.results_dir / "pre_cache" / f"{run.model_fingerprint}__{run.data_sha256}__n{run.n}__{mode}.json"
    cached = json.loads(path.read_text()) if path.is_file() else None
    complete = cached is not None and all(EM_LOCALITY in pre for pre in cached)
    pres = _plain(pre_edit_metrics(host, editor, requests, cached))
    if not complete:
        write_json(path, pres)
    return pres


def portable_path(value) -> str:
    """A path as results may record it: relative to the repository, or under ~, not this machine's."""
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        return str(value)
    # As written and with links resolved: ../shared may itself be a link to elsewhere.
    forms = {Path(os.path.abspath(path)), path.resolve()}
    for root, shown in ((REPO_ROOT, ""), (REPO_ROOT.parent, ".."), (Path.home(), "~")):
        bases = {Path(os.path.abspath(root)), root.resolve()} - {Path(root.anchor)}  # under '/' says nothing
        for form, base in itertools.product(forms, bases):
            if form.is_relative_to(base):
                return str(Path(shown) / form.relative_to(base))
    return str(value)


def hparams_record(hparams) -> dict:
    """The hparams as the run used them (file values plus the benchmark's overrides)."""
    fields = dict(vars(hparams))
    for name in PATH_FIELDS:
        if isinstance(fields.get(name), (str, Path)):
            fields[name] = portable_path(fields[name])
    return _plain(fields)


def rescore_with_em(args, host, spec, hparams, run: RunSpec, requests, out: Path, saved: dict) -> dict:
    """A finished sequence's result with `em` added, scored on its kept final state (nothing edited again)."""
    editor = open_editor(host, spec, hparams)
    pres = pre_edit(args, host, editor, spec, run, requests)
    spec.adapter.restore(editor.model, final_state_dir(checkpoint_dir(out)), hparams)
    model = spec.adapter.as_host_returns(editor)
    records = saved["records"]
    for record, request, pre in zip(tqdm(records, desc=f"{spec.name} em"), requests, pres):
        if record["prompt"] != request["prompt"]:
            raise ValueError(f"{out}: record {record['prompt']!r} is not request {request['prompt']!r}; "
                             f"delete the result to run it again")
        record["em"] = host.exact_match(model, editor.tok, request, pre.get(EM_LOCALITY))
    return {**saved, "em": mean_scores(records)["em"], "em_rescored": time.strftime("%Y-%m-%d %H:%M:%S")}


def open_progress(args, spec, data_set, scenario, hparams, out: Path):
    """What lets a cut-off run resume: the single-edit journal, or a sequence's checkpoint (None for batches)."""
    if scenario.kind == "batch":
        return None
    header = {"method": spec.name, "set": data_set, "scenario": scenario.name, "n": args.n,
              "data_dir": portable_path(args.data_dir.resolve()), "fluency_n": args.fluency_n,
              "hparams": hparams_record(hparams)}
    if scenario.kind == "seq":
        header["checkpoints"] = args.checkpoints
    where = f"[{spec.name}] {data_set} {scenario.name}"
    if scenario.kind == "single":
        progress = Journal(journal_path(out), _plain(header))
        done = len(progress.entries)
    else:
        progress = SequenceCheckpoint(checkpoint_dir(out), _plain(header), spec)
        done = progress.progress["bookkeeping"]["n_edits"] if progress.progress else 0
        if not progress.enabled:
            print(f"{where}: {spec.alg_name}'s edited state is not saved between edits; a cut-off run starts over")
    if progress.discarded_reason:
        print(f"{where}: earlier progress discarded: {progress.discarded_reason}")
    elif done:
        print(f"{where}: resuming after {done} finished edits")
    return progress


def run_one(args, host, spec, hparams, hparams_file, data_set, scenario, requests, out: Path, run: RunSpec):
    """Fresh model, pre-edit outputs, the scenario; returns the result to save and the run's progress."""
    started = time.time()
    progress = open_progress(args, spec, data_set, scenario, hparams, out)
    with peak_memory() as memory:
        editor = open_editor(host, spec, hparams)
        pres = pre_edit(args, host, editor, spec, run, requests)
        result = run_scenario(host, editor, spec, scenario, requests, pres, args.fluency_n, args.checkpoints,
                              progress)
    del editor
    edit_seconds = result.edit_seconds
    return {
        "status": "ok", **run.record(), "method": spec.name, "alg_name": spec.alg_name, "set": data_set,
        "scenario": scenario.name, "n": args.n, "n_edits": result.n_edits,
        "n_scored": len(result.records), **mean_scores(result.records),
        "seconds_per_edit": float(np.mean(edit_seconds)) if edit_seconds else None,
        "edit_seconds_total": float(np.sum(edit_seconds)),
        "wall_seconds": time.time() - started + result.resumed_seconds, **result.costs,
        "peak_mb": memory.get("block_peak_mb") or memory.get("getrusage_peak_mb"), "memory": memory,
        "checkpoints": result.checkpoints, "hparams_file": portable_path(hparams_file),
        "hparams": hparams_record(hparams), "fluency_n": min(args.fluency_n, len(result.records)),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        # Records or edits taken from an earlier, cut-off run: wall_seconds includes theirs, peak memory not.
        "resumed_records": result.resumed,
        # Per request its text and its scores (the host's full metric dicts are large).
        "records": [{"prompt": r["prompt"], "target_new": r["target_new"], **scores}
                    for scores, r in zip(result.records, requests)],
    }, progress


def run_spec(args, spec: MethodSpec, hparams, data_set: str, scenario: Scenario, data_sha: str, model_fp: str):
    """The RunSpec of one (method, data set, scenario) with the hparams as this run resolved them."""
    protocol = {"fluency_n": args.fluency_n}
    if scenario.kind == "seq":
        protocol["checkpoints"] = checkpoint_steps(scenario.size, args.checkpoints, scenario.batch)
    return RunSpec(spec.name, data_set, scenario.name, args.n, hparams_record(hparams), data_sha, model_fp, protocol)


def _skip_reason(args, spec: MethodSpec, scenario: Scenario, n: int):
    allowed = args.scenario_limits.get(spec.name)
    if allowed is not None and scenario.name not in allowed:
        return f"not run: --scenarios-for limited {spec.name} to {','.join(allowed)} (time budget)"
    if scenario.edits_per_call > 1 and not spec.batchable:
        return f"{spec.name} is not batchable in the host (BatchEditor.is_batchable_method)"
    if scenario.kind == "seq" and scenario.size > n:
        return f"{scenario.name} needs at least {scenario.size} records; --n is {n}"
    return None


def _record_failure(out: Path, spec: MethodSpec, data_set: str, scenario: str, n: int, err: Exception) -> int:
    traceback.print_exc()
    write_json(out, {"status": "failed", "method": spec.name, "set": data_set, "scenario": scenario, "n": n,
                     "error": f"{type(err).__name__}: {err}"})
    return 1


def run_method(args, spec: MethodSpec, hparams_file: Path, result_path) -> int:
    torch.set_num_threads(args.threads)
    host = Host.load()
    args.model_dir = model_loading.resolve_model_path(args.model)
    model_fp = model_fingerprint(args.model_dir)
    prepare = host.prepare_requests
    if spec.takes_loc_prompts:  # WISE trains on unrelated prompts, from the train split
        prepare = functools.partial(prepare, loc_prompts=training_loc_prompts(args.data_dir, args.n))
    failed = 0
    for data_set in args.sets:
        requests = build_requests(prepare, args.data_dir, data_set, args.n)
        data_sha = data_hash(args.data_dir, data_set)
        for name in args.scenarios:
            scenario = Scenario.parse(name)
            out = result_path(args.results_dir, args.n, spec.name, data_set, name)
            where = f"[{spec.name}] {data_set} {name}"
            try:
                hparams = load_hparams(spec, hparams_file, args.model_dir, args.stats_dir, scenario.edits_per_call)
                run = run_spec(args, spec, hparams, data_set, scenario, data_sha, model_fp)
            except Exception as err:
                failed += _record_failure(out, spec, data_set, name, args.n, err)
                continue
            saved = json.loads(out.read_text()) if out.is_file() else {}
            finished = not args.force and finished_result(saved, run)
            if finished and "em" not in saved and final_state_dir(checkpoint_dir(out)).is_dir():
                print(f"{where}: finished under the same run key; adding generation-based scores from its kept state")
                write_json(out, rescore_with_em(args, host, spec, hparams, run, requests, out, saved))
                continue
            if finished and "em" in saved:
                print(f"{where}: skipped, finished under the same run key (--force redoes it)")
                continue
            if finished:
                print(f"{where}: redone, it was scored before generation-based scoring")
            elif saved.get("status") == "ok":
                print(f"{where}: redone, its result is of another run ({'; '.join(changed_fields(saved, run))})")
            reason = _skip_reason(args, spec, scenario, args.n)
            if reason:
                write_json(out, {"status": "skipped", "method": spec.name, "set": data_set,
                                 "scenario": name, "n": args.n, "reason": reason})
                continue
            print(f"{where}: start {time.strftime('%H:%M:%S')}")
            try:
                summary, progress = run_one(args, host, spec, hparams, hparams_file, data_set, scenario,
                                            requests, out, run)
            except Exception as err:
                failed += _record_failure(out, spec, data_set, name, args.n, err)
                continue
            write_json(out, summary)
            if progress:
                progress.done()
            print(f"{where}: rel={summary['rel']} gen={summary['gen']} "
                  f"loc={summary['loc']} port={summary['port']} s/edit={summary['seconds_per_edit']:.2f} "
                  f"wall={summary['wall_seconds']:.0f}s")
    return 1 if failed else 0
