"""Summaries of the metrics EasyEdit's BaseEditor.edit returns (one dict per edited record).

reliability    = post rewrite_acc          (the edit prompt itself)
generalization = post rephrase_acc         (a paraphrase of it)
locality       = post locality *_acc       (unrelated prompts: agreement with the unedited model)
portability    = post portability *_acc    (questions that follow from the edit)
Each record's lists are averaged first, then the records; a metric no record has is None.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import host_setup  # noqa: F401  (puts the checkout on sys.path)
from easyedit_baft.metrics import mean, record_scores  # noqa: E402

# Summary name -> the per-record score it averages (easyedit_baft.metrics.record_scores).
SUMMARY_KEYS = {"reliability": "rel", "generalization": "gen", "locality": "loc", "portability": "port"}


def summarize(all_metrics: List[dict], phase: str = "post") -> Dict[str, Optional[float]]:
    """The four means over records for 'post' (after each edit) or 'pre' (before)."""
    scores = [record_scores(m.get(phase, {})) for m in all_metrics]
    summary = {name: mean([s[key] for s in scores]) for name, key in SUMMARY_KEYS.items()}
    if phase == "pre":
        summary["locality"] = None  # locality compares post with pre: it has no 'pre' value
    fluency = mean([s["fluency"] for s in scores])
    if fluency is not None:
        summary["fluency"] = fluency
    return summary


def scoring_protocols(all_metrics: List[dict]) -> List[str]:
    """How the host scored rewrite accuracy (e.g. teacher forcing vs. generation), per its metric_meta."""
    groups = {
        meta.get("comparable_group", "unknown")
        for m in all_metrics
        for meta in [m.get("post", {}).get("metric_meta", {}).get("rewrite", {})]
        if meta
    }
    return sorted(groups)


class EditTimer:
    """Wraps editor.apply_algo to time the edits alone (the host's own loop also evaluates)."""

    def __init__(self, editor):
        self.seconds: List[float] = []
        self._apply: Callable = editor.apply_algo
        editor.apply_algo = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._apply(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - start)

    @property
    def mean(self) -> Optional[float]:
        return mean(self.seconds)


def _cell(value: Optional[float], percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.2f}"


def markdown_table(rows: List[dict]) -> str:
    """rows: dicts with method, n, the summary keys, seconds_per_edit, protocols, skipped."""
    lines = [
        "| Method | n | Reliability | Generalization | Locality | Portability | s/edit | rewrite scored by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['method']} | - | - | - | - | - | - | skipped: {row['skipped']} |")
            continue
        cells = [_cell(row.get(k)) for k in SUMMARY_KEYS]
        lines.append(
            f"| {row['method']} | {row['n']} | " + " | ".join(cells)
            + f" | {_cell(row.get('seconds_per_edit'), percent=False)} | {', '.join(row.get('protocols', []))} |"
        )
    return "\n".join(lines)
