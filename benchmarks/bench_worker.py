"""One method's share of a benchmark run: every data set and scenario, each saved as soon as it ends.

A run's RunSpec (method, data set, scenario, n, the resolved hparams, the data file's hash, the model's
fingerprint, the scoring) hashes into the key of its finished result: every skip, resume and redo decision
is one question, did it finish under this key?"""

import functools
import hashlib
import itertools
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

import easyedit_baft.model_loading as model_loading
from bench_data import build_requests, data_hash, training_loc_prompts
from bench_methods import METHODS, REPO_ROOT, MethodSpec, hparams_file, load_hparams
from bench_progress import (Journal, SequenceCheckpoint, checkpoint_dir, final_state_dir, journal_path, plain,
                            result_path, write_json)
from bench_report import num, pct
from bench_scenarios import (EM_LOCALITY, SCORES, Host, Scenario, checkpoint_steps, mean_scores, open_editor,
                             peak_memory, pre_edit_metrics, run_scenario)
from easyedit_baft.metrics import mean

PATH_FIELDS = ("model_name", "stats_dir", "locality_source", "P_loc")
# BaFT fields added after results were keyed enter a key only where they act (unset, a run is as before).
LATER_FIELDS = {"rank_per_request": lambda hp: hp.rank_per_request and hp.batch_size > 1,
                "cap_locality": lambda hp: hp.cap_locality is not None,
                "relation_templates": lambda hp: hp.relation_templates != "questions"}
SAMPLE_BYTES = 1 << 20  # a model file over twice this is hashed by its two ends: a whole 13 GB one takes minutes


@dataclass(frozen=True)
class RunSpec:
    method: str
    data_set: str
    scenario: str
    n: int
    hparams: dict  # as the run resolves them (hparams_record)
    data_sha256: str
    model_fingerprint: str
    protocol: dict  # how it is scored: fluency_n, and a sequence's checkpoints

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), sort_keys=True, default=str))

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def record(self) -> dict:
        """What a result stores of its spec (its hparams are stored beside, as 'hparams')."""
        return {"run_key": self.key, "run_spec": {k: v for k, v in self.as_dict().items() if k != "hparams"}}


def model_fingerprint(model_dir) -> str:
    """A hash of a local model folder's files (names, sizes and contents, large ones sampled)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(model_dir)}:{size}\n".encode())
        with path.open("rb") as handle:
            if size > 2 * SAMPLE_BYTES:  # its first SAMPLE_BYTES, then from its last ones
                digest.update(handle.read(SAMPLE_BYTES))
                handle.seek(size - SAMPLE_BYTES)
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def changed_fields(saved: dict, spec: RunSpec) -> list:
    """What differs between a saved result and this spec, for the 'redone' message."""
    recorded = {**(saved.get("hparams") or {}), **(saved.get("run_spec") or {})}
    current = {**spec.hparams, **spec.record()["run_spec"]}
    return [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in current.items() if recorded.get(k) != v and (
        k in recorded or k in LATER_FIELDS)] or ["no run key" if "run_key" not in saved else "run key"]


def fresh_editor(args, host: Host, spec: MethodSpec, hparams, run: RunSpec, requests):
    """The host's editor on the unedited model, and its pre-edit metrics: shared between methods through a
    cache file keyed by model, data and n, and by the scoring (a method scored by generation has its own)."""
    editor = open_editor(host, spec, hparams)
    mode = "generate" if spec.adapter.scored_by_generation else "teacher"
    path = args.results_dir / "pre_cache" / f"{run.model_fingerprint}__{run.data_sha256}__n{run.n}__{mode}.json"
    cached = json.loads(path.read_text()) if path.is_file() else None
    complete = cached is not None and all(EM_LOCALITY in pre for pre in cached)
    pres = plain(pre_edit_metrics(host, editor, requests, cached))
    if not complete:
        write_json(path, pres)
    return editor, pres


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
    fields = {k: v for k, v in vars(hparams).items() if k not in LATER_FIELDS or LATER_FIELDS[k](hparams)}
    return plain({k: portable_path(v) if k in PATH_FIELDS and isinstance(v, (str, Path)) else v
                  for k, v in fields.items()})


def keep_saved(args, host, spec, hparams, run: RunSpec, requests, out: Path, where: str) -> bool:
    """Whether the saved result stands: finished under this run key (a sequence scored before `em` gets it
    from its kept final state, nothing edited again). Otherwise the run is redone, and this says why."""
    saved = json.loads(out.read_text()) if out.is_file() else {}
    final_state = final_state_dir(checkpoint_dir(out))
    if saved.get("status") != "ok":
        return False
    if args.force:
        print(f"{where}: redone because of --force")
    elif saved.get("run_key") != run.key:  # one from before run keys is redone too: it also lacks em
        print(f"{where}: redone, its result is of another run ({'; '.join(changed_fields(saved, run))})")
    elif "em" in saved:
        print(f"{where}: skipped, finished under the same run key (--force redoes it)")
        return True
    elif not final_state.is_dir():
        print(f"{where}: redone, it was scored before generation-based scoring")
    else:
        print(f"{where}: finished under the same run key; adding generation-based scores from its kept state")
        editor, pres = fresh_editor(args, host, spec, hparams, run, requests)
        spec.adapter.restore(editor.model, final_state, hparams)
        model = spec.adapter.as_host_returns(editor)
        for record, request, pre in zip(tqdm(saved["records"], desc=f"{spec.name} em"), requests, pres):
            if record["prompt"] != request["prompt"]:
                raise ValueError(f"{out}: record {record['prompt']!r} is not request {request['prompt']!r}; "
                                 f"delete the result to run it again")
            record["em"] = host.exact_match(model, editor.tok, request, pre.get(EM_LOCALITY))
        saved.update(em=mean_scores(saved["records"])["em"], em_rescored=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(out, saved)
        return True
    return False


def open_progress(args, spec, scenario: Scenario, run: RunSpec, out: Path, where: str):
    """What lets a cut-off run resume: the single-edit journal, or a sequence's checkpoint (None for batches)."""
    if scenario.kind == "batch":
        return None
    header = {"method": run.method, "set": run.data_set, "scenario": run.scenario, "n": run.n,
              "data_dir": portable_path(args.data_dir), "fluency_n": args.fluency_n, "hparams": run.hparams}
    if scenario.kind == "single":
        progress = Journal(journal_path(out), header)
        done = len(progress.entries)
    else:
        progress = SequenceCheckpoint(checkpoint_dir(out), {**header, "checkpoints": args.checkpoints}, spec)
        done = progress.progress["bookkeeping"]["n_edits"] if progress.progress else 0
        if not progress.enabled:
            print(f"{where}: {spec.alg_name}'s edited state is not saved between edits; a cut-off run starts over")
    if progress.discarded_reason:
        print(f"{where}: earlier progress discarded: {progress.discarded_reason}")
    elif done:
        print(f"{where}: resuming after {done} finished edits")
    return progress


def run_one(args, host, spec, hparams, hparams_path, scenario: Scenario, requests, run: RunSpec, progress) -> dict:
    """Fresh model, pre-edit outputs, the scenario; returns the result to save."""
    started = time.time()
    with peak_memory() as memory:
        editor, pres = fresh_editor(args, host, spec, hparams, run, requests)
        result = run_scenario(host, editor, spec, scenario, requests, pres, args.fluency_n, args.checkpoints,
                              progress)
    del editor
    return {
        "status": "ok", **run.record(), "method": spec.name, "alg_name": spec.alg_name, "set": run.data_set,
        "scenario": run.scenario, "n": run.n, "n_edits": result.n_edits,
        "n_scored": len(result.records), **mean_scores(result.records),
        "seconds_per_edit": mean(result.edit_seconds), "edit_seconds_total": float(sum(result.edit_seconds)),
        "wall_seconds": time.time() - started + result.resumed_seconds, **result.costs,
        "peak_mb": memory.get("block_peak_mb") or memory.get("getrusage_peak_mb"), "memory": memory,
        "checkpoints": result.checkpoints, "hparams_file": portable_path(hparams_path),
        "hparams": run.hparams, "fluency_n": min(args.fluency_n, len(result.records)),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        # Records or edits taken from an earlier, cut-off run: wall_seconds includes theirs, peak memory not.
        "resumed_records": result.resumed,
        # Per request its text and its scores (the host's full metric dicts are large).
        "records": [{"prompt": r["prompt"], "target_new": r["target_new"], **scores}
                    for scores, r in zip(result.records, requests)],
    }


def _skip_reason(args, spec: MethodSpec, scenario: Scenario):
    allowed = args.scenarios_for.get(spec.name)
    if allowed is not None and scenario.name not in allowed:
        return f"not run: --scenarios-for limited {spec.name} to {','.join(allowed)} (time budget)"
    if scenario.edits_per_call > 1 and not spec.batchable:
        return f"{spec.name} is not batchable in the host (BatchEditor.is_batchable_method)"
    if scenario.kind == "seq" and scenario.size > args.n:
        return f"{scenario.name} needs at least {scenario.size} records; --n is {args.n}"
    return None


def _record_failure(out: Path, names: dict, err: Exception) -> int:
    traceback.print_exc()
    write_json(out, {"status": "failed", **names, "error": f"{type(err).__name__}: {err}"})
    return 1


def run_method(args) -> int:
    """The worker: method args.worker on every data set and scenario; 1 if any failed."""
    spec = METHODS[args.worker]
    hparams_path = args.hparams.get(spec.name) or hparams_file(spec, args.model_tag, args.baft_hparams,
                                                               args.hparams_dir)
    torch.set_num_threads(args.threads)
    host = Host.load()
    model_dir = model_loading.resolve_model_path(args.model)
    model_fp = model_fingerprint(model_dir)
    prepare = host.prepare_requests
    if spec.takes_loc_prompts:  # WISE trains on unrelated prompts, from the train split
        prepare = functools.partial(prepare, loc_prompts=training_loc_prompts(args.data_dir, args.n))
    failed = 0
    for data_set in args.sets:
        requests = build_requests(prepare, args.data_dir, data_set, args.n)
        data_sha = data_hash(args.data_dir, data_set)
        for scenario in args.scenarios:
            out = result_path(args.results_dir, args.n, spec.name, data_set, scenario.name)
            where = f"[{spec.name}] {data_set} {scenario.name}"
            names = {"method": spec.name, "set": data_set, "scenario": scenario.name, "n": args.n}
            protocol = {"fluency_n": args.fluency_n}
            if scenario.kind == "seq":
                protocol["checkpoints"] = checkpoint_steps(scenario.size, args.checkpoints, scenario.batch)
            try:
                hparams = load_hparams(spec, hparams_path, model_dir, args.stats_dir, scenario.edits_per_call)
                run = RunSpec(spec.name, data_set, scenario.name, args.n, hparams_record(hparams), data_sha, model_fp,
                              protocol)
            except Exception as err:
                failed += _record_failure(out, names, err)
                continue
            if keep_saved(args, host, spec, hparams, run, requests, out, where):
                continue
            reason = _skip_reason(args, spec, scenario)
            if reason:
                write_json(out, {"status": "skipped", **names, "reason": reason})
                continue
            print(f"{where}: start {time.strftime('%H:%M:%S')}")
            try:
                progress = open_progress(args, spec, scenario, run, out, where)
                result = run_one(args, host, spec, hparams, hparams_path, scenario, requests, run, progress)
            except Exception as err:
                failed += _record_failure(out, names, err)
                continue
            write_json(out, result)
            if progress:
                progress.done()
            scores = " ".join(f"{key}={pct(result[key])}" for key in SCORES)
            print(f"{where}: {scores} (%) s/edit={num(result['seconds_per_edit'])} wall={result['wall_seconds']:.0f}s")
    return 1 if failed else 0
