"""Which bases fire: per-token, per-basis gate values of every intervened layer.

explain() runs one forward pass with gate recording on; render_heatmap() draws the
result as a PNG (tokens across, one row per layer and basis).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

import numpy as np
import torch

from . import layers as plumbing

TITLE_PROMPT_CHARS = 80  # longer prompts are cut in the heatmap's title
ANNOTATE_MAX_CELLS = 400  # above this many cells the values are not written into the heatmap


@dataclass
class Explanation:
    """Gate values g(h) of one prompt: gates[layer] is a float32 array [T, r] with values in [0, 1]."""

    prompt: str
    tokens: List[str]
    token_ids: List[int]
    gates: Dict[int, np.ndarray]

    def peak_gate(self) -> Dict[int, float]:
        """The largest gate of each layer over every token and basis."""
        return {layer: float(values.max()) for layer, values in self.gates.items()}

    def to_dict(self) -> dict:
        """Plain lists and numbers, ready for json.dumps."""
        return {
            "prompt": self.prompt,
            "tokens": list(self.tokens),
            "token_ids": list(self.token_ids),
            "gates": {str(layer): values.tolist() for layer, values in self.gates.items()},
        }


def _token_strings(tok, token_ids: List[int]) -> List[str]:
    # Decoding one id at a time shows each token as text (' Paris'), not as byte symbols ('ĠParis').
    return [tok.decode([token_id]) for token_id in token_ids]


def _recorded_gates(model, state: plumbing.BaFTState, input_ids: torch.Tensor) -> Dict[int, np.ndarray]:
    """One forward pass with every intervention on and recording its gates."""
    modules = state.interventions
    was_enabled = state.enabled
    state.enabled = True  # the explanation is of the edits, even while they are switched off
    for module in modules.values():
        module.record_gates, module.last_gates = True, None
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
        return {index: module.last_gates[0].float().cpu().numpy() for index, module in sorted(modules.items())}
    finally:
        state.enabled = was_enabled
        for module in modules.values():
            module.record_gates, module.last_gates = False, None


def explain(model, tok, prompt: str) -> Explanation:
    """Per-token, per-basis gates of every intervened layer while the model reads `prompt`."""
    state = plumbing.require_state(model, "explain")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt={prompt!r:.80} must be a non-empty string")
    token_ids = list(tok(prompt)["input_ids"])
    if not token_ids:
        raise ValueError(f"prompt={prompt!r:.80} tokenises to no tokens; give text the tokenizer can read")
    device = model.get_input_embeddings().weight.device
    input_ids = torch.tensor([token_ids], dtype=torch.long, device=device)
    gates = _recorded_gates(model, state, input_ids)
    return Explanation(prompt, _token_strings(tok, token_ids), token_ids, gates)


def _gate_matrix(explanation: Explanation) -> tuple:
    """Rows (layer, basis) by columns (tokens), and the row labels."""
    rows, labels = [], []
    for layer, values in sorted(explanation.gates.items()):
        for basis in range(values.shape[1]):
            rows.append(values[:, basis])
            labels.append(f"L{layer} b{basis}")
    return np.stack(rows), labels


def _title(prompt: str) -> str:
    shown = prompt if len(prompt) <= TITLE_PROMPT_CHARS else prompt[: TITLE_PROMPT_CHARS - 1] + "…"
    return f"BaFT basis gates g(h) for {shown!r}"


def _annotate(axes, matrix: np.ndarray) -> None:
    for row, column in np.ndindex(matrix.shape):
        value = matrix[row, column]
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="black" if value > 0.6 else "white")


def render_heatmap(explanation: Explanation, path: Union[str, Path]) -> Path:
    """Write the explanation's gates as a PNG heatmap at `path`; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix, row_labels = _gate_matrix(explanation)
    n_rows, n_tokens = matrix.shape
    # A bare Figure on the Agg canvas: no pyplot, so no global backend or open-figure state.
    figure = Figure(figsize=(max(6.0, 0.55 * n_tokens + 2.5), max(3.0, 0.35 * n_rows + 2.0)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks(range(n_tokens), [repr(t)[1:-1] or " " for t in explanation.tokens], rotation=90, fontsize=8)
    axes.set_yticks(range(n_rows), row_labels, fontsize=8)
    axes.set_xlabel("token")
    axes.set_ylabel("layer, basis")
    start = 0
    for _layer, values in sorted(explanation.gates.items())[:-1]:  # a line between layers
        start += values.shape[1]
        axes.axhline(start - 0.5, color="white", linewidth=1.5)
    if matrix.size <= ANNOTATE_MAX_CELLS:
        _annotate(axes, matrix)
    figure.colorbar(image, ax=axes, label="gate g(h)")
    axes.set_title(_title(explanation.prompt), fontsize=10)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", dpi=120)
    return path
