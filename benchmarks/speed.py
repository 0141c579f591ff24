"""What one BaFT edit costs, in seconds and in whole-model passes, on the embedded model.

    python benchmarks/speed.py --single 8 --sequence 500 --batch 100 --threads 1

Single edits (ZsRE eval records from --start): seconds per edit, steps, rows and tokens per step, where the
time goes, and the cost in reference passes (the whole model, forward and backward, on one 32-token row);
edit k of a sequence against edit 1; the cost per fact of one batch. --package-root measures another checkout.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--hparams", help="BaFT YAML (default: the shipped smollm2-135m.yaml)")
    add("--data", help="ZsRE eval JSON (default: ../shared/data/zsre/...)")
    add("--start", type=int, default=200, help="first record of the single edits")
    add("--single", type=int, default=8, help="single edits (0: skip)")
    add("--sequence", type=int, default=0, help="edits in one sequence (0: skip)")
    add("--sequence-start", type=int, default=500)
    add("--batch", type=int, default=0, help="requests in one batch (0: skip)")
    add("--threads", type=int, default=1)
    add("--package-root", default=str(REPO), help="checkout whose easyedit_baft is measured")
    add("--json", help="also write the numbers to this file")
    return parser.parse_args()


def reference_pass_seconds(model, repeats: int = 5) -> float:
    """Median seconds of forward + backward of the whole model on one 32-token row, after a warm-up pass."""
    ids = torch.arange(100, 132)[None, :]
    model.requires_grad_(True)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return statistics.median(times[1:])


def single_edit_numbers(reports, seconds, pass_s: float) -> dict:
    steps = [r.steps for r in reports]
    numbers = {"edits": len(seconds), "s_median": statistics.median(seconds),
               "s_p90": sorted(seconds)[min(len(seconds) - 1, int(0.9 * len(seconds)))],
               "steps_mean": statistics.mean(steps), "passes_median": statistics.median(seconds) / pass_s,
               "s_per_step": sum(seconds) / max(sum(steps), 1)}
    if getattr(reports[0], "rows", 0):  # older versions report steps and seconds only
        numbers["rows_per_step"] = statistics.mean(r.rows for r in reports)
        numbers["tokens_per_step"] = statistics.mean(r.tokens for r in reports)
        phases = sorted({phase for r in reports for phase in r.seconds_by_phase})
        numbers["seconds_by_phase_per_edit"] = {
            phase: sum(r.seconds_by_phase.get(phase, 0.0) for r in reports) / len(reports) for phase in phases}
    return numbers


def print_section(name: str, numbers: dict) -> dict:
    """Print one measure's numbers (not the per-edit lists); returns them."""
    print(f"\n## {name}")
    for key, value in numbers.items():
        if isinstance(value, dict):
            print(f"  {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in value.items()))
        elif not isinstance(value, list):
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return numbers


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, args.package_root)  # the easyedit_baft measured: this checkout's or another's
    from easyedit_baft import layers as plumbing
    from easyedit_baft.baft_main import apply_baft_to_model
    from easyedit_baft.hparams import BaFTHyperParams
    from easyedit_baft.model_loading import load_model
    from easyedit_baft.records import default_data_dir, edit_request, load_edit_cases

    hparams_path = args.hparams or str(Path(args.package_root) / "hparams/BaFT/smollm2-135m.yaml")
    data = args.data or str(default_data_dir() / "zsre" / "zsre_mend_eval_portability_gpt4.json")
    if not Path(data).is_file():
        sys.exit(f"--data {data!r} does not exist; put the ZsRE eval split there or pass --data PATH")
    hp = BaFTHyperParams.from_hparams(hparams_path)
    model, tok = load_model(None)
    cases = load_edit_cases(data, max(args.start + args.single, args.sequence_start + max(args.sequence, args.batch)))
    pass_s = reference_pass_seconds(model)
    # The commit and the config's name, not this machine's paths: results are committed.
    commit = subprocess.run(["git", "-C", args.package_root, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    results = {"package_commit": commit, "hparams": Path(hparams_path).name, "reference_pass_s": pass_s}
    print(f"reference pass (whole model, forward + backward, 1 x 32 tokens): {pass_s:.3f} s")

    def edit(requests, detach=True):
        start = time.perf_counter()
        apply_baft_to_model(model, tok, requests, hp)
        seconds, report = time.perf_counter() - start, plumbing.get_state(model).last_report
        if detach:
            plumbing.detach(model)
        return report, seconds

    if args.single:
        single = cases[args.start: args.start + args.single]
        reports, seconds = zip(*[edit([edit_request(case)]) for case in tqdm(single, desc="single edits")])
        results["single"] = print_section("single edits", single_edit_numbers(reports, seconds, pass_s))

    if args.sequence:
        sequence = cases[args.sequence_start: args.sequence_start + args.sequence]
        seconds = [edit([edit_request(case)], detach=False)[1] for case in tqdm(sequence, desc="sequence")]
        plumbing.detach(model)
        # Edit k against edit 1, each as the mean of the 10 edits from it (single edits are noisy).
        means = {k: statistics.mean(seconds[k - 1: k + 9] if k + 9 <= len(seconds) else seconds[-10:])
                 for k in (1, 10, 100, 500) if k <= len(seconds)}
        ratios = {k: m / means[1] for k, m in means.items()}
        results["sequence"] = print_section("sequence", {"edits": len(seconds), "seconds": seconds,
                                                         "edit_k_over_edit_1": ratios,
                                                         "s_median": statistics.median(seconds)})

    if args.batch:
        requests = [edit_request(c) for c in cases[args.sequence_start: args.sequence_start + args.batch]]
        report, s = edit(requests)
        results["batch"] = print_section(f"batch of {len(requests)}", {
            "facts": len(requests), "seconds": s, "steps": report.steps, "holds": report.holds,
            "s_per_fact": s / len(requests), "passes_per_fact": s / len(requests) / pass_s})

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
