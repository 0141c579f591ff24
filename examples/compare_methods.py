"""BaFT, ROME, MEMIT and GRACE through EasyEdit's BaseEditor, on the same records, in one loop.

Each method edits each record alone (sequential_edit=False: the host restores the model after every
edit) and is scored by the host's own evaluation. Writes, under --out:
  results.json            per-method summary, the command line and the host version
  results.md              the same as a markdown table
  <METHOD>_metrics.json   the host's per-record metrics

    EASYEDIT_ROOT=/path/to/EasyEdit python examples/compare_methods.py --n 20
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from edit_metrics import EditTimer, markdown_table, scoring_protocols, summarize
from host_setup import (DATA_DIR, DEFAULT_HPARAMS_NAME, EXAMPLES_HPARAMS, METHODS, REPO_ROOT, hparams_file,
                        host_version, load_hparams, memit_stats_missing, require_host, resolve_model, set_threads)

from easyedit_baft.records import edit_kwargs, read_records, record_format  # noqa: E402

LOG = logging.getLogger("compare_methods")
DEFAULT_DATA = DATA_DIR / "zsre" / "zsre_mend_eval_portability_gpt4.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ZsRE or CounterFact JSON (format detected)")
    parser.add_argument("--n", type=int, default=20, help="records, from the start of the file")
    parser.add_argument("--model", default=None, help="local HF model directory (default: the embedded SmolLM2)")
    parser.add_argument("--hparams-dir", type=Path, default=EXAMPLES_HPARAMS,
                        help="folder with METHOD/NAME.yaml (BaFT also looks in the package's hparams/)")
    parser.add_argument("--hparams-name", default=DEFAULT_HPARAMS_NAME, help="NAME of the YAML files")
    parser.add_argument("--baft-hparams", type=Path, default=None, help="a BaFT YAML to use instead of the lookup")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"default: {' '.join(METHODS)}")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "compare_methods")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--host-label", default=None,
                        help="how results name the EasyEdit version (default: the clone's git commit, if any)")
    return parser.parse_args(argv)


def run_method(host, method: str, args, model_path: str, records, fmt) -> dict:
    """One method over all records; returns its summary row (or why it was skipped)."""
    path = args.baft_hparams if method == "BaFT" and args.baft_hparams else hparams_file(
        method, args.hparams_dir, args.hparams_name)
    hparams = load_hparams(host, method, path, model_path)
    if method == "MEMIT":
        missing = memit_stats_missing(hparams, model_path)
        if missing:
            LOG.warning("MEMIT skipped: statistics missing (%s); make them with "
                        "`python examples/memit_stats.py --hparams %s`", missing[0], path)
            return {"method": method, "skipped": "no second-moment statistics; run examples/memit_stats.py"}
    editor = host.BaseEditor.from_hparams(hparams)
    timer = EditTimer(editor)
    start = time.perf_counter()
    metrics, _, _ = editor.edit(**edit_kwargs(records, fmt), sequential_edit=False, verbose=False)
    wall = time.perf_counter() - start
    (args.out / f"{method}_metrics.json").write_text(json.dumps(metrics, indent=1, default=float), encoding="utf-8")
    del editor
    gc.collect()
    return {"method": method, "n": len(metrics), **summarize(metrics),
            "pre": summarize(metrics, phase="pre"), "seconds_per_edit": timer.mean,
            "wall_seconds": wall, "protocols": scoring_protocols(metrics), "hparams_file": str(path)}


def write_results(args, argv, records, fmt, model_path: str, rows: list) -> str:
    """results.json and results.md for the methods run so far; returns the markdown table."""
    script = Path(__file__).resolve().relative_to(REPO_ROOT)
    command = "EASYEDIT_ROOT=<EasyEdit clone> python " + " ".join(
        shlex.quote(a) for a in [str(script)] + (sys.argv[1:] if argv is None else list(argv)))
    host = args.host_label or host_version()
    summary = {"data": str(args.data), "format": fmt, "n": len(records), "model": Path(model_path).name,
               "host_version": host, "command": command, "methods": rows}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    table = markdown_table(rows)
    (args.out / "results.md").write_text(
        f"# Knowledge editing on {args.data.name} ({len(records)} records, {fmt} format), model "
        f"{Path(model_path).name}, EasyEdit {host}\n\n{table}\n\n"
        "Percentages; s/edit is the method's own edit time, without the host's evaluation. Each record is "
        "edited alone and the model restored (sequential_edit=False). Rows scored by different protocols "
        "(last column) are not directly comparable.\n\n"
        f"Command: `{command}`\n", encoding="utf-8")
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        sys.exit(f"--methods {unknown} unknown; choose from {list(METHODS)}")
    set_threads(args.threads)
    records = read_records(args.data, args.n)
    fmt = record_format(records[0])
    model_path = resolve_model(args.model)
    args.out, args.hparams_dir = args.out.resolve(), args.hparams_dir.resolve()  # the cwd changes below
    args.baft_hparams = args.baft_hparams.resolve() if args.baft_hparams else None
    args.out.mkdir(parents=True, exist_ok=True)
    host = require_host()
    os.chdir(args.out)  # the host writes logs/ into the working directory

    rows = []
    for method in tqdm(args.methods, desc="methods", unit="method"):
        rows.append(run_method(host, method, args, model_path, records, fmt))
        LOG.info("%s: %s", method, {k: v for k, v in rows[-1].items() if k != "pre"})
        table = write_results(args, argv, records, fmt, model_path, rows)  # after each method: partial runs count
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
