"""BaFT, ROME, MEMIT and GRACE through EasyEdit's BaseEditor, on the same records, in one loop.

    EASYEDIT_ROOT=/path/to/EasyEdit python examples/compare_methods.py --n 20 --set zsre

Each method is built by the host (BaseEditor), edits with its apply_algo and is scored by its evaluation,
through the benchmark runner's own code: the numbers and the table are those the runner reports.
"""

import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks"), str(REPO_ROOT / "examples")]  # run from a checkout

from bench_data import DATA_FILES, build_requests, requests_from_records  # noqa: E402
from bench_methods import METHODS, hparams_file, load_hparams  # noqa: E402
from bench_report import TABLE_COLUMNS, markdown_head, markdown_row, table_row, with_harmonic_means  # noqa: E402
from bench_scenarios import Host, mean_scores, open_editor, pre_edit_metrics, run_scenario, scenario_arg  # noqa: E402
from easyedit_baft.metrics import mean  # noqa: E402
from easyedit_baft.model_loading import resolve_model_path  # noqa: E402
from easyedit_baft.records import default_data_dir, read_records  # noqa: E402
from memit_stats import missing_statistics  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", default="zsre", choices=sorted(DATA_FILES), help="data set (as in the runner)")
    parser.add_argument("--n", type=int, default=20, help="records, from the start of the set")
    parser.add_argument("--scenario", type=scenario_arg, default="single", help="single, batchK, seqT or seqbatchBxM")
    parser.add_argument("--methods", nargs="+", default=["BaFT", "ROME", "MEMIT", "GRACE"], choices=sorted(METHODS))
    parser.add_argument("--model", default="smollm2-135m", help="the embedded model, or a local HF model folder")
    parser.add_argument("--hparams-name", default="smollm2-135m", help="NAME of the METHOD/NAME.yaml files")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--data", type=Path, help="a record file of any supported format, instead of --set")
    parser.add_argument("--baft-hparams", type=Path, help="a BaFT YAML (default: hparams/BaFT/NAME.yaml)")
    parser.add_argument("--out", type=Path, help="also write the table to OUT/results.md")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    host = Host.load()  # EASYEDIT_ROOT first on sys.path; BaFT registered
    model = resolve_model_path(args.model)
    requests = requests_from_records(host.prepare_requests, read_records(args.data, args.n)) if args.data else \
        build_requests(host.prepare_requests, args.data_dir, args.set, args.n)
    table = markdown_head(TABLE_COLUMNS)
    print("\n".join(table))
    for name in args.methods:
        spec = METHODS[name]
        hparams = load_hparams(spec, hparams_file(spec, args.hparams_name, args.baft_hparams), model, None,
                               args.scenario.edits_per_call)
        missing = missing_statistics(hparams, model)
        if missing:  # the host would try to compute them from Wikipedia, online
            run = {"status": "skipped", "method": name, "reason": f"missing {missing[0]} (examples/memit_stats.py)"}
        else:
            editor = open_editor(host, spec, hparams)  # the host's BaseEditor(hparams)
            result = run_scenario(host, editor, spec, args.scenario, requests, pre_edit_metrics(host, editor, requests),
                                  0, [])
            run = with_harmonic_means({"status": "ok", "method": name, **mean_scores(result.records),
                                       "seconds_per_edit": mean(result.edit_seconds), **result.costs})
        table.append(markdown_row(table_row(run)))
        print(table[-1], flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text("\n".join(table) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
