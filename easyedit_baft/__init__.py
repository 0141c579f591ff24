"""BaFT (basis-level representation fine-tuning) as a knowledge-editing method for EasyEdit."""

from . import host  # first: host.add_root_from_env lets .hparams subclass the host's HyperParams

host.add_root_from_env()

from .artifacts import ArtifactError, explain, load_edits, remove_edits, render_heatmap, save_edits  # noqa: E402
from .baft_main import apply_baft_to_model  # noqa: E402
from .hparams import BaFTHyperParams  # noqa: E402
from .host import host_available, register_with_host  # noqa: E402

host.register_lazily()

__all__ = [
    "apply_baft_to_model", "BaFTHyperParams", "host_available", "register_with_host",
    "save_edits", "load_edits", "remove_edits", "explain", "render_heatmap", "ArtifactError",
]
