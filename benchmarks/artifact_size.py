"""Bytes of a saved BaFT edit per edit, on random LLaMA models of a given hidden size.

    python benchmarks/artifact_size.py --hidden 576 4096 --edits 1 10

Per hidden size d, rank-4 edits (growing by 4 each) at layer 1 of a 2-layer random LLaMA, saved after
each count in --edits: the files' bytes, per edit and per trained number (3 r d + 2 r per edit).
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]  # this checkout, and the one tiny-model module

import torch  # noqa: E402

from easyedit_baft import save_edits  # noqa: E402
from easyedit_baft.baft_main import apply_baft_to_model  # noqa: E402
from easyedit_baft.hparams import BaFTHyperParams  # noqa: E402
from tiny_models import make_tokenizer, many_requests, tiny_llama  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[576, 4096])
    parser.add_argument("--edits", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    torch.set_num_threads(1)
    tok = make_tokenizer()
    requests = many_requests(max(args.edits))
    print(f"{'d':>5} {'edits':>5} {'bytes':>10} {'bytes/edit':>10} {'trained numbers/edit':>20} {'bytes/number':>12}")
    for hidden in args.hidden:
        model = tiny_llama(n_layers=2, hidden_size=hidden)
        hp = BaFTHyperParams(model_name="random-llama", layers=[1], rank=4, grow_rank=4, n_steps=2,
                             n_locality_prompts=4, n_context_prefixes=0, max_length=64)
        for done in range(1, max(args.edits) + 1):
            apply_baft_to_model(model, tok, [requests[done - 1]], hp)
            if done not in args.edits:
                continue
            with tempfile.TemporaryDirectory() as directory:
                save_edits(model, Path(directory) / "edits")
                size = sum(p.stat().st_size for p in (Path(directory) / "edits").iterdir())
            numbers = 3 * hp.rank * hidden + 2 * hp.rank
            print(f"{hidden:>5} {done:>5} {size:>10} {size / done:>10.0f} {numbers:>20} {size / done / numbers:>12.2f}")


if __name__ == "__main__":
    main()
