"""BaFT against ROME, MEMIT, GRACE (and more) on real knowledge-editing data, quality and cost in one run.

    EASYEDIT_ROOT=/path/to/EasyEdit python benchmarks/run_benchmarks.py \
        --n 100 --sets zsre counterfact --scenarios single seq100

Each method runs in its own worker process (so its peak memory is its own, and one method's
failure leaves the others running). Every finished (method, data set, scenario) is written to
RESULTS/runs/ at once, with its run key (bench_spec.RunSpec: method, data set, scenario, n, resolved
hparams, data file hash, model fingerprint): running the same command again skips what finished under
the same key and redoes what was made with anything else (--force redoes it anyway).
The report (results.json, results.md, plots) is rebuilt after every method.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import List

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))  # sibling helper modules
sys.path.insert(0, str(REPO_ROOT))  # easyedit_baft from this checkout

from bench_data import DATA_FILES  # noqa: E402
from easyedit_baft.records import default_data_dir  # noqa: E402
from bench_methods import DEFAULT_METHODS, METHODS  # noqa: E402
from bench_scenarios import Scenario  # noqa: E402

EMBEDDED_MODEL_NAME = "smollm2-135m"
DEFAULT_BAFT_HPARAMS = REPO_ROOT / "hparams" / "BaFT" / "smollm2-135m.yaml"
DEFAULT_HPARAMS_DIR = REPO_ROOT / "examples" / "hparams"
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_CHECKPOINTS = [10, 25, 50, 100, 250, 500]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_MODEL_NAME,
                        help="'smollm2-135m' (the embedded model) or a local HF model directory")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                        help="folder with the benchmark files (default: ../shared/data from the repo root)")
    parser.add_argument("--n", type=int, default=100, help="records per data set (the first N)")
    parser.add_argument("--sets", nargs="+", default=["zsre", "counterfact"], choices=sorted(DATA_FILES))
    parser.add_argument("--scenarios", nargs="+", default=["single", "seq100"],
                        help="single, batchK (e.g. batch10) and seqT (e.g. seq100)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=sorted(METHODS),
                        help=f"default: {' '.join(DEFAULT_METHODS)}")
    parser.add_argument("--baft-hparams", type=Path, default=DEFAULT_BAFT_HPARAMS,
                        help="BaFT hparams YAML (ReFT and BaFT-noLB are derived from it)")
    parser.add_argument("--hparams-dir", type=Path, default=DEFAULT_HPARAMS_DIR,
                        help="host methods' hparams: DIR/<ALG>/<model tag>.yaml")
    parser.add_argument("--hparams", nargs="*", default=[], metavar="METHOD=PATH",
                        help="hparams file of one method, overriding --hparams-dir")
    parser.add_argument("--model-tag", default="smollm2-135m", help="file name of hparams under --hparams-dir")
    parser.add_argument("--stats-dir", type=Path, default=None,
                        help="ROME/MEMIT second-moment stats dir (default: the hparams' own, from the repo root)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR)
    parser.add_argument("--fluency-n", type=int, default=10,
                        help="score fluency (100 generated tokens) on the first K edits of each scenario")
    parser.add_argument("--checkpoints", type=int, nargs="*", default=DEFAULT_CHECKPOINTS,
                        help="sequential runs are also scored on all edits so far after these many edits")
    parser.add_argument("--scenarios-for", nargs="*", default=[], metavar="METHOD=S1,S2",
                        help="limit a method to some of --scenarios (e.g. ROME=single when time is short); "
                             "the others are recorded as skipped")
    parser.add_argument("--force", action="store_true", help="redo results that already exist")
    parser.add_argument("--jobs", type=int, default=1, help="methods run side by side (one worker process each)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (on a shared CPU, more threads than free cores slow it down)")
    parser.add_argument("--worker", metavar="METHOD", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in args.scenarios:
        Scenario.parse(name)  # fail before any work on a misspelt scenario
    args.scenario_limits = parse_scenario_limits(parser, args)
    if args.n < 1:
        parser.error(f"--n {args.n}: give at least 1 record per set")
    malformed = [item for item in args.hparams if "=" not in item]
    if malformed:
        parser.error(f"--hparams {malformed[0]!r}: give METHOD=PATH, e.g. ROME=examples/hparams/ROME/smollm2-135m.yaml")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    # Paths are read from where the command was given, before a worker changes its working directory.
    for name in ("data_dir", "baft_hparams", "hparams_dir", "results_dir", "stats_dir"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).expanduser().resolve())
    if args.model != EMBEDDED_MODEL_NAME:
        args.model = str(Path(args.model).expanduser().resolve())
    args.hparams = [f"{k}={Path(v).expanduser().resolve()}" for k, v in (i.split("=", 1) for i in args.hparams)]
    return args


def parse_scenario_limits(parser, args) -> dict:
    """--scenarios-for METHOD=S1,S2 -> {METHOD: [S1, S2]}, checked against --methods and --scenarios."""
    limits = {}
    for item in args.scenarios_for:
        method, _, names = item.partition("=")
        chosen = [n for n in names.split(",") if n]
        if method not in METHODS:
            parser.error(f"--scenarios-for {item!r}: unknown method {method!r}; use one of {sorted(METHODS)}")
        stray = [n for n in chosen if n not in args.scenarios]
        if stray or not chosen:
            parser.error(f"--scenarios-for {item!r}: give scenarios from --scenarios {args.scenarios}, comma-separated")
        limits[method] = chosen
    return limits


def hparams_path(args, method: str) -> Path:
    overrides = dict(item.split("=", 1) for item in args.hparams)
    unknown = sorted(set(overrides) - set(METHODS))
    if unknown:
        raise SystemExit(f"--hparams names unknown method(s) {unknown}; use one of {sorted(METHODS)}")
    if method in overrides:
        return Path(overrides[method]).resolve()
    spec = METHODS[method]
    if spec.hparams_key == "BaFT":
        return args.baft_hparams.resolve()
    # The host methods' files come from --hparams-dir; the optional ones not there, from benchmarks/hparams.
    candidates = [args.hparams_dir / spec.hparams_key, BENCH_DIR / "hparams" / spec.hparams_key]
    for folder in candidates:
        if (folder / f"{args.model_tag}.yaml").is_file():
            return (folder / f"{args.model_tag}.yaml").resolve()
    return (candidates[0] / f"{args.model_tag}.yaml").resolve()


def result_path(results_dir: Path, n: int, method: str, data_set: str, scenario: str) -> Path:
    return results_dir / "runs" / f"n{n}" / data_set / scenario / f"{method}.json"


# ---- worker: one method, every set and scenario ----------------------------------------------


def worker(args) -> int:
    from bench_worker import run_method

    os.chdir(host_workdir(args))  # the host writes its logs/ into the working directory
    return run_method(args, METHODS[args.worker], hparams_path(args, args.worker), result_path)


def host_workdir(args) -> Path:
    workdir = args.results_dir / "host_workdir"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


# ---- driver ------------------------------------------------------------------------------------


def worker_command(args, method: str) -> List[str]:
    """The driver's own command line, for one method (workers parse it as the driver did)."""
    return [sys.executable, str(Path(__file__).resolve()), *args.argv, "--methods", method, "--worker", method]


def run_driver(args) -> int:
    from bench_report import write_report

    args.results_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    failures = []
    # Each worker decides, per data set and scenario, whether a finished result exists under its run key.
    queue = list(args.methods)
    running = {}
    while queue or running:
        while queue and len(running) < max(args.jobs, 1):
            method = queue.pop(0)
            print(f"\n=== {method}: start ({time.strftime('%H:%M:%S')}) ===", flush=True)
            running[method] = subprocess.Popen(worker_command(args, method))
        time.sleep(2)
        for method, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[method]
            if process.returncode != 0:
                failures.append(f"{method} (worker exit code {process.returncode})")
            print(f"=== {method}: done, exit code {process.returncode} ({time.strftime('%H:%M:%S')}) ===", flush=True)
            write_report(args, quiet=True)
    print(f"\nWall time: {(time.time() - started) / 60:.1f} min", flush=True)
    write_report(args, quiet=False)
    if failures:
        print("Failed: " + ", ".join(failures), flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        try:
            return worker(args)
        except Exception:
            traceback.print_exc()
            return 1
    return run_driver(args)


if __name__ == "__main__":
    sys.exit(main())
