"""BaFT against ROME, MEMIT, GRACE (and more) on real knowledge-editing data, quality and cost in one run.

    EASYEDIT_ROOT=/path/to/EasyEdit python benchmarks/run_benchmarks.py \\
        --n 100 --sets zsre counterfact --scenarios single seq100

Each method runs in its own worker process (its peak memory its own, its failure not the others'). Each
finished (method, data set, scenario) is saved at once under its run key: the same command again skips
what finished under the same key (--force redoes it). The report is rebuilt after every method.
"""

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import List

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))  # sibling helper modules
sys.path.insert(0, str(REPO_ROOT))  # easyedit_baft from this checkout

from bench_data import DATA_FILES  # noqa: E402
from bench_methods import DEFAULT_METHODS, METHODS  # noqa: E402
from bench_report import write_report  # noqa: E402
from bench_scenarios import Scenario, scenario_arg  # noqa: E402
from bench_worker import run_method  # noqa: E402
from easyedit_baft.records import default_data_dir  # noqa: E402

EMBEDDED_MODEL_NAME = "smollm2-135m"


def resolved(path) -> Path:
    """A path as the command gave it, made absolute: a worker reads it after changing its working directory."""
    return Path(path).expanduser().resolve()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", default=EMBEDDED_MODEL_NAME, help="the embedded model (smollm2-135m) or a local HF model folder")
    add("--data-dir", type=resolved, default=resolved(default_data_dir()), help="default: ../shared/data")
    add("--n", type=int, default=100, help="records per data set (the first N)")
    add("--sets", nargs="+", default=["zsre", "counterfact"], choices=sorted(DATA_FILES))
    add("--scenarios", nargs="+", type=scenario_arg, default=[Scenario.parse("single"), Scenario.parse("seq100")],
        help="single, batchK, seqT or seqbatchBxM (default: single seq100)")
    add("--methods", nargs="+", default=DEFAULT_METHODS, choices=sorted(METHODS), help=f"default: {DEFAULT_METHODS}")
    add("--baft-hparams", type=resolved, default=REPO_ROOT / "hparams/BaFT/smollm2-135m.yaml",
        help="BaFT's YAML (ReFT and BaFT-noLB are derived from it)")
    add("--hparams-dir", type=resolved, default=REPO_ROOT / "examples/hparams",
        help="the host methods' DIR/ALG/TAG.yaml (then benchmarks/hparams)")
    add("--hparams", nargs="*", default=[], metavar="METHOD=PATH", help="one method's hparams file, instead")
    add("--model-tag", default="smollm2-135m", help="TAG: the hparams file name for this model")
    add("--stats-dir", type=resolved, help="ROME/MEMIT second-moment statistics (default: the hparams' own)")
    add("--results-dir", type=resolved, default=BENCH_DIR / "results")
    add("--fluency-n", type=int, default=10, help="fluency (100 generated tokens) of a scenario's first K edits")
    add("--checkpoints", type=int, nargs="*", default=[10, 25, 50, 100, 250, 500],
        help="a sequence is also scored on all edits so far after these many")
    add("--scenarios-for", nargs="*", default=[], metavar="METHOD=S1,S2",
        help="run METHOD in these of --scenarios only (e.g. ROME=single when time is short); the rest is skipped")
    add("--force", action="store_true", help="redo results that already exist")
    add("--jobs", type=int, default=1, help="methods run side by side (one worker process each)")
    add("--threads", type=int, default=1, help="torch threads per worker (more than the free cores slow it down)")
    add("--worker", metavar="METHOD", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n {args.n}: give at least 1 record per set")
    scenario_names = [scenario.name for scenario in args.scenarios]
    limits = {}
    for item in args.scenarios_for:
        method, _, names = item.partition("=")
        limits[method] = [name for name in names.split(",") if name]
        if method not in METHODS or not limits[method] or not set(limits[method]) <= set(scenario_names):
            parser.error(f"--scenarios-for {item!r}: give METHOD=S1,S2 with METHOD one of {sorted(METHODS)} and "
                         f"the scenarios among --scenarios {scenario_names}")
    args.scenarios_for = limits
    for item in args.hparams:
        if item.partition("=")[0] not in METHODS or "=" not in item:
            parser.error(f"--hparams {item!r}: give METHOD=PATH with METHOD one of {sorted(METHODS)}, "
                         "e.g. ROME=examples/hparams/ROME/smollm2-135m.yaml")
    args.hparams = {name: resolved(path) for name, path in (item.split("=", 1) for item in args.hparams)}
    if args.model != EMBEDDED_MODEL_NAME:
        args.model = str(resolved(args.model))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def worker_command(args, method: str) -> List[str]:
    """The driver's own command line, for one method (workers parse it as the driver did)."""
    return [sys.executable, str(Path(__file__).resolve()), *args.argv, "--methods", method, "--worker", method]


def run_driver(args) -> int:
    args.results_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def run_worker(method: str) -> int:
        # Each worker decides, per data set and scenario, whether a finished result exists under its run key.
        print(f"\n=== {method}: start ({time.strftime('%H:%M:%S')}) ===")
        code = subprocess.run(worker_command(args, method)).returncode
        print(f"=== {method}: done, exit code {code} ({time.strftime('%H:%M:%S')}) ===")
        return code

    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        codes = {method: pool.submit(run_worker, method) for method in args.methods}
        for _ in as_completed(codes.values()):
            write_report(args, quiet=True)  # the report so far, after every method
    print(f"\nWall time: {(time.time() - started) / 60:.1f} min")
    write_report(args, quiet=False)
    failures = [f"{method} (worker exit code {code.result()})" for method, code in codes.items() if code.result()]
    if failures:
        print("Failed: " + ", ".join(failures))
    return 1 if failures else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # the driver and its workers write one log: whole lines, at once
    if not args.worker:
        return run_driver(args)
    workdir = args.results_dir / "host_workdir"  # a scratch folder: the host writes its logs/ into the working one
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    return run_method(args)  # an uncaught error: traceback, exit code 1


if __name__ == "__main__":
    sys.exit(main())
