"""What one BaFT edit costs, in seconds and in whole-model passes, on the embedded model.

    python benchmarks/speed.py --single 8 --sequence 500 --batch 100 --threads 1

Prints, for single edits (ZsRE eval records from --start): seconds per edit (median, p90), steps,
rows and tokens per step, seconds per step, where the time goes, and the cost in reference passes
(the whole model, forward and backward, on one 32-token row). Then the cost of edit k of a
sequence against edit 1, and the amortised cost per fact of one batch. Numbers only; no asserts.
--package-root runs another checkout of easyedit_baft (an older version) under the same script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", default=None, help="BaFT YAML (default: the shipped smollm2-135m.yaml)")
    parser.add_argument("--data", default=None, help="ZsRE eval JSON (default: ../shared/data/zsre/...)")
    parser.add_argument("--start", type=int, default=200, help="first record of the single edits")
    parser.add_argument("--single", type=int, default=8, help="single edits (0: skip)")
    parser.add_argument("--sequence", type=int, default=0, help="edits in one sequence (0: skip)")
    parser.add_argument("--sequence-start", type=int, default=500)
    parser.add_argument("--batch", type=int, default=0, help="requests in one batch (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--package-root", default=str(REPO), help="checkout whose easyedit_baft is measured")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    return parser.parse_args()


def reference_pass_seconds(model, repeats: int = 5) -> float:
    """Median seconds of forward + backward of the whole model on one 32-token row."""
    import torch
    ids = torch.arange(100, 132)[None, :]
    model.requires_grad_(True)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return statistics.median(times[1:])  # the first pass warms up


def p90(values):
    return sorted(values)[min(len(values) - 1, int(0.9 * len(values)))]


def summarise(name: str, reports, seconds, pass_s: float) -> dict:
    steps = [r.steps for r in reports]
    out = {
        "edits": len(seconds), "s_median": statistics.median(seconds), "s_p90": p90(seconds),
        "steps_mean": statistics.mean(steps), "passes_median": statistics.median(seconds) / pass_s,
        "s_per_step": sum(seconds) / max(sum(steps), 1),
    }
    # Older versions report steps and seconds only.
    if getattr(reports[0], "rows", 0):
        out["rows_per_step"] = statistics.mean(r.rows for r in reports)
        out["tokens_per_step"] = statistics.mean(r.tokens for r in reports)
        phases = {}
        for r in reports:
            for phase, s in r.seconds_by_phase.items():
                phases[phase] = phases.get(phase, 0.0) + s
        out["seconds_by_phase_per_edit"] = {k: v / len(reports) for k, v in sorted(phases.items())}
    print(f"\n## {name}")
    for key, value in out.items():
        if isinstance(value, dict):
            print(f"  {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in value.items()))
        else:
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return out


def main():
    args = parse_args()
    sys.path.insert(0, args.package_root)
    import torch
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

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
    last = max(args.start + args.single, args.sequence_start + max(args.sequence, args.batch))
    cases = load_edit_cases(data, last)
    pass_s = reference_pass_seconds(model)
    # The commit and the config's name, not this machine's paths: results are committed.
    commit = subprocess.run(["git", "-C", args.package_root, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    results = {"package_commit": commit, "hparams": Path(hparams_path).name, "reference_pass_s": pass_s}
    print(f"reference pass (whole model, forward + backward, 1 x 32 tokens): {pass_s:.3f} s")

    def edit(requests):
        start = time.perf_counter()
        apply_baft_to_model(model, tok, requests, hp)
        return plumbing.get_state(model).last_report, time.perf_counter() - start

    if args.single:
        reports, seconds = [], []
        for case in tqdm(cases[args.start: args.start + args.single], desc="single edits"):
            report, s = edit([edit_request(case)])
            reports.append(report)
            seconds.append(s)
            plumbing.detach(model)
        results["single"] = summarise("single edits", reports, seconds, pass_s)

    if args.sequence:
        seconds = []
        for case in tqdm(cases[args.sequence_start: args.sequence_start + args.sequence], desc="sequence"):
            seconds.append(edit([edit_request(case)])[1])
        plumbing.detach(model)
        # Edit k against edit 1, each as the mean of the 10 edits from it (single edits are noisy).
        window = lambda k: statistics.mean(seconds[k - 1: k + 9]) if k + 9 <= len(seconds) else statistics.mean(seconds[-10:])
        ratios = {k: window(k) / window(1) for k in (1, 10, 100, 500) if k <= len(seconds)}
        results["sequence"] = {"edits": len(seconds), "seconds": seconds, "edit_k_over_edit_1": ratios,
                               "s_median": statistics.median(seconds)}
        print("\n## sequence\n  edit k / edit 1 (means of 10 edits from k): "
              + ", ".join(f"k={k} {r:.2f}" for k, r in ratios.items())
              + f"\n  median s per edit {statistics.median(seconds):.3f}")

    if args.batch:
        requests = [edit_request(c) for c in cases[args.sequence_start: args.sequence_start + args.batch]]
        report, s = edit(requests)
        plumbing.detach(model)
        results["batch"] = {"facts": len(requests), "seconds": s, "steps": report.steps, "holds": report.holds,
                            "s_per_fact": s / len(requests), "passes_per_fact": s / len(requests) / pass_s}
        print(f"\n## batch of {len(requests)}\n  {s:.1f} s, {report.steps} steps, holds={report.holds}, "
              f"{s / len(requests):.3f} s per fact = {s / len(requests) / pass_s:.2f} passes per fact")

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
