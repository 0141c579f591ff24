"""BaFT (basis-level representation fine-tuning) as a knowledge-editing method for EasyEdit."""

from .artifacts import ArtifactError, explain, load_edits, remove_edits, render_heatmap, save_edits
from .baft_main import apply_baft_to_model
from .hparams import BaFTHyperParams  # imports the EasyEdit host, where one is importable (host.py)
from .host import host_available, register_with_host

# Registers BaFT with the host that .hparams imported; without one, this only logs that (once).
register_with_host(retry=False)

__all__ = [
    "apply_baft_to_model", "BaFTHyperParams", "host_available", "register_with_host",
    "save_edits", "load_edits", "remove_edits", "explain", "render_heatmap", "ArtifactError",
]
