"""The main job: edit the embedded SmolLM2 with real facts and show what changed.

Edits each fact alone (restored after each, as EasyEdit's single-edit protocol does), then
all of them one after another on the same model (continual editing), and reports EasyEdit's
measures for both, the before/after answers, and a plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tqdm.auto import tqdm

from . import metrics
from .baft_main import apply_baft_to_model
from .hparams import BaFTHyperParams
from .model_loading import load_model, placement
from .prompt_sources import recorded_locality_source
from .records import edit_request

MEASURES = ("reliability", "generalization", "locality", "portability")


@dataclass
class ModeResult:
    """EasyEdit's measures for one editing mode, averaged over the edited facts."""

    mode: str
    per_case: List[Dict[str, Optional[float]]] = field(default_factory=list)
    seconds_per_edit: float = 0.0

    def mean(self, measure: str) -> Optional[float]:
        values = [c[measure] for c in self.per_case if c[measure] is not None]
        return sum(values) / len(values) if values else None


def _baseline(model, tok, case: dict) -> dict:
    """What the unedited model predicts where locality is measured."""
    if not case.get("locality_prompt"):
        return {}
    return {"locality_tokens": metrics.answer_tokens(
        model, tok, case["locality_prompt"], case["locality_ground_truth"] or "")}


def _score(model, tok, case: dict, baseline: dict) -> Dict[str, Optional[float]]:
    def acc(prompt_key, target_key="target_new"):
        if not case.get(prompt_key) or not case.get(target_key):
            return None
        return metrics.target_accuracy(model, tok, case[prompt_key], case[target_key])

    loc = None
    if "locality_tokens" in baseline:
        after = metrics.answer_tokens(model, tok, case["locality_prompt"], case["locality_ground_truth"] or "")
        loc = metrics.locality(baseline["locality_tokens"], after)
    return {"reliability": acc("prompt"), "generalization": acc("rephrase_prompt"), "locality": loc,
            "portability": acc("portability_prompt", "portability_ground_truth")}


def _answers(model, tok, case: dict) -> Dict[str, str]:
    fields = {"edited": "prompt", "paraphrase": "rephrase_prompt", "unrelated": "locality_prompt"}
    answers = {name: metrics.greedy_answer(model, tok, case[key]) for name, key in fields.items() if case.get(key)}
    return {name: text or "(only whitespace)" for name, text in answers.items()}


def edit_one_at_a_time(model, tok, cases, hparams, baselines) -> ModeResult:
    result, seconds = ModeResult("single"), 0.0
    for case, baseline in zip(tqdm(cases, desc="single edits"), baselines):
        start = time.perf_counter()
        model, undo = apply_baft_to_model(model, tok, [edit_request(case)], hparams, return_orig_weights=True)
        seconds += time.perf_counter() - start
        result.per_case.append(_score(model, tok, case, baseline))
        undo()
    result.seconds_per_edit = seconds / len(cases)
    return result


def edit_in_sequence(model, tok, cases, hparams, baselines):
    """All edits accumulate on `model`; every one is evaluated after the last. Returns (result, undo_all)."""
    undo_all, seconds = None, 0.0
    for case in tqdm(cases, desc="sequential edits"):
        start = time.perf_counter()
        model, undo = apply_baft_to_model(model, tok, [edit_request(case)], hparams, return_orig_weights=True)
        seconds += time.perf_counter() - start
        undo_all = undo_all or undo  # the first call's undo removes every later edit too
    result = ModeResult("sequential", [_score(model, tok, c, b) for c, b in zip(cases, baselines)],
                        seconds / len(cases))
    return result, undo_all


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_report(cases, before, after, results: List[ModeResult], hparams_path: str, model_name: str) -> str:
    lines = [f"# BaFT demo on {model_name}", "", f"hparams: `{hparams_path}`, {len(cases)} edits", "",
             "## Answers before and after (all edits applied in sequence)", "",
             "| prompt | kind | target | before | after |", "|---|---|---|---|---|"]
    for case, b, a in zip(cases, before, after):
        for kind, key in (("edited", "prompt"), ("paraphrase", "rephrase_prompt"), ("unrelated", "locality_prompt")):
            if kind in b:
                target = case["target_new"] if kind != "unrelated" else "(unchanged)"
                row = [case[key], kind, target, b[kind], a[kind]]
                lines.append("| " + " | ".join(str(x).replace("|", "/") for x in row) + " |")
    lines += ["", "## EasyEdit measures", "", "| mode | " + " | ".join(MEASURES) + " | s/edit |",
              "|---|" + "---|" * (len(MEASURES) + 1)]
    for r in results:
        lines.append(f"| {r.mode} | " + " | ".join(_fmt(r.mean(m)) for m in MEASURES)
                     + f" | {r.seconds_per_edit:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: List[ModeResult], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        values = [r.mean(m) or 0.0 for m in MEASURES]
        ax.bar([x + i * width for x in range(len(MEASURES))], values, width, label=r.mode)
    ax.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(MEASURES))], MEASURES)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over edits")
    ax.set_title("BaFT on the embedded SmolLM2-135M")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_demo(cases: List[dict], hparams_path: str, model: Optional[str], out_dir: Path,
             compare_with_host: bool = True) -> dict:
    hparams = BaFTHyperParams.from_hparams(hparams_path)
    print(f"Loading model {model or 'smollm2-135m (embedded)'} ...", flush=True)
    hf_model, tok = load_model(model, **placement(hparams))
    before = [_answers(hf_model, tok, c) for c in tqdm(cases, desc="answers before editing")]
    baselines = [_baseline(hf_model, tok, c) for c in cases]

    single = edit_one_at_a_time(hf_model, tok, cases, hparams, baselines)
    sequential, undo_all = edit_in_sequence(hf_model, tok, cases, hparams, baselines)
    after = [_answers(hf_model, tok, c) for c in tqdm(cases, desc="answers after editing")]
    undo_all()
    results = [single, sequential]

    out_dir.mkdir(parents=True, exist_ok=True)
    model_name = model or "SmolLM2-135M-Instruct (embedded)"
    report = markdown_report(cases, before, after, results, hparams_path, model_name)
    hparams_record = hparams.to_dict()
    hparams_record["locality_source"] = recorded_locality_source(hparams.locality_source)
    summary = {
        "model": model_name, "hparams": hparams_record, "cases": cases,
        "answers_before": before, "answers_after_sequential": after,
        "results": {r.mode: {"per_case": r.per_case, "mean": {m: r.mean(m) for m in MEASURES},
                             "seconds_per_edit": r.seconds_per_edit} for r in results},
    }
    (out_dir / "demo.md").write_text(report, encoding="utf-8")
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    plot(results, out_dir / "demo.png")
    print(report)
    print(f"Saved {out_dir / 'demo.md'}, {out_dir / 'demo.json'} and {out_dir / 'demo.png'}")
    return summary
