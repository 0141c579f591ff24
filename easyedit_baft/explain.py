"""Which bases fire: per-token, per-basis gate values of every intervened layer.

explain() runs one forward pass with gate recording on; render_heatmap() draws the
result as a PNG (tokens across, one row per layer and basis). Both are bounded for long
prompts: explain() reads the last EXPLAIN_MAX_TOKENS tokens, the heatmap shows the last
HEATMAP_MAX_TOKENS of those, and each says what it cut.
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
EXPLAIN_MAX_TOKENS = 1024  # a longer prompt is cut from the start: memory and time stay bounded
HEATMAP_MAX_TOKENS = 64  # columns drawn: the last tokens, so the PNG stays readable and small


@dataclass
class Explanation:
    """Gate values g(h) of one prompt: gates[layer] is a float32 array [T, r] with values in [0, 1].

    tokens are the last T tokens of the prompt; n_cut counts those before them, which were not read.
    """

    prompt: str
    tokens: List[str]
    token_ids: List[int]
    gates: Dict[int, np.ndarray]
    n_cut: int = 0

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
            "n_cut": self.n_cut,
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


def explain(model, tok, prompt: str, max_tokens: int = EXPLAIN_MAX_TOKENS) -> Explanation:
    """Per-token, per-basis gates of every intervened layer while the model reads `prompt`
    (its last max_tokens tokens when it is longer; Explanation.n_cut says how many were cut)."""
    state = plumbing.require_state(model, "explain")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt={prompt!r:.80} must be a non-empty string")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens!r} must be an integer >= 1")
    token_ids = list(tok(prompt)["input_ids"])
    if not token_ids:
        raise ValueError(f"prompt={prompt!r:.80} tokenises to no tokens; give text the tokenizer can read")
    n_cut = max(0, len(token_ids) - max_tokens)
    token_ids = token_ids[n_cut:]
    device = model.get_input_embeddings().weight.device
    input_ids = torch.tensor([token_ids], dtype=torch.long, device=device)
    gates = _recorded_gates(model, state, input_ids)
    return Explanation(prompt, _token_strings(tok, token_ids), token_ids, gates, n_cut)


def _gate_matrix(explanation: Explanation, n_columns: int) -> tuple:
    """Rows (layer, basis) by the last n_columns tokens, and the row labels."""
    rows, labels = [], []
    for layer, values in sorted(explanation.gates.items()):
        for basis in range(values.shape[1]):
            rows.append(values[-n_columns:, basis])
            labels.append(f"L{layer} b{basis}")
    return np.stack(rows), labels


def shown_tokens(explanation: Explanation, max_tokens: int = HEATMAP_MAX_TOKENS) -> tuple:
    """(tokens the heatmap draws, tokens in the whole prompt)."""
    total = explanation.n_cut + len(explanation.tokens)
    return min(max_tokens, len(explanation.tokens)), total


def _title(explanation: Explanation, n_shown: int) -> str:
    prompt = explanation.prompt
    # The heatmap shows the prompt's end, so a long prompt's title shows its end too.
    shown = prompt if len(prompt) <= TITLE_PROMPT_CHARS else "…" + prompt[-(TITLE_PROMPT_CHARS - 1):]
    title = f"BaFT basis gates g(h) for {shown!r}"
    total = explanation.n_cut + len(explanation.tokens)
    return title if n_shown == total else f"{title}\n(the last {n_shown} of its {total} tokens)"


def _annotate(axes, matrix: np.ndarray) -> None:
    for row, column in np.ndindex(matrix.shape):
        value = matrix[row, column]
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="black" if value > 0.6 else "white")


def render_heatmap(explanation: Explanation, path: Union[str, Path], max_tokens: int = HEATMAP_MAX_TOKENS) -> Path:
    """Write the gates of the explanation's last max_tokens tokens as a PNG heatmap at `path`; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_shown, _ = shown_tokens(explanation, max_tokens)
    matrix, row_labels = _gate_matrix(explanation, n_shown)
    n_rows, n_tokens = matrix.shape
    # A bare Figure on the Agg canvas: no pyplot, so no global backend or open-figure state.
    figure = Figure(figsize=(max(6.0, 0.55 * n_tokens + 2.5), max(3.0, 0.35 * n_rows + 2.0)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    labels = [repr(t)[1:-1] or " " for t in explanation.tokens[-n_shown:]]
    axes.set_xticks(range(n_tokens), labels, rotation=90, fontsize=8)
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
    axes.set_title(_title(explanation, n_shown), fontsize=10)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png", dpi=120)
    return path
