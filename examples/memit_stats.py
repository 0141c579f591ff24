"""Second-moment statistics for MEMIT from a local text corpus, in the files the host reads.

MEMIT (and ROME with mom2_adjustment) needs, for each edited layer, E[k k^T] over the inputs k of
the MLP's output projection. The host computes it from Wikipedia through HF datasets, which an
offline machine cannot reach; when the file already exists the host loads it and downloads nothing.
This script writes that file from local text instead.

It is a small-corpus approximation: by default a few thousand short Wikipedia-like texts (KnowEdit
WikiBio passages and ZsRE train questions, some 50k tokens) where upstream uses 100k Wikipedia
articles. Numbers from MEMIT on these statistics are indicative, not comparable with published ones.

File layout, as the host's layer_stats expects it:
  STATS_DIR/<model dir name>/<mom2_dataset>_stats/<layer>_<mom2_dtype>_mom2_<mom2_n_samples>.npz
with keys mom2.mom2 (the d x d moment sum), mom2.count (tokens), mom2.constructor and sample_size.

    python examples/memit_stats.py --hparams examples/hparams/MEMIT/smollm2-135m.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path
from typing import Dict, Iterable, List

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout

from easyedit_baft.model_loading import resolve_model_path  # noqa: E402
from easyedit_baft.records import default_data_dir  # noqa: E402

DATA_DIR = default_data_dir()
EXAMPLES_HPARAMS = REPO_ROOT / "examples" / "hparams"

LOG = logging.getLogger("memit_stats")

DEFAULT_CORPUS = (
    DATA_DIR / "knowedit" / "WikiBio" / "wikibio-train-all.json",
    DATA_DIR / "zsre" / "zsre_mend_train-1k.json",
)
# Which record fields are running text, per corpus shape.
TEXT_FIELDS = ("text", "src", "loc", "prompt")
SECOND_MOMENT_CONSTRUCTOR = "easyeditor.util.runningstats.SecondMoment()"


class _StopForward(Exception):
    """Raised past the deepest layer needed: the rest of the model is not computed."""


def stats_file(stats_dir: Path, model_path: str, dataset: str, layer_name: str, dtype: str, n_samples: int) -> Path:
    # The host names the model folder after the last path component of model.config._name_or_path.
    model_dir = str(model_path).rstrip("/").rsplit("/")[-1]
    return Path(stats_dir) / model_dir / f"{dataset}_stats" / f"{layer_name}_{dtype}_mom2_{n_samples}.npz"


def missing_statistics(hparams, model_path: str) -> List[str]:
    """The statistics files an editor with mom2_adjustment will read and that do not exist."""
    if not getattr(hparams, "mom2_adjustment", False):
        return []
    files = [stats_file(Path(hparams.stats_dir), model_path, hparams.mom2_dataset,
                        hparams.rewrite_module_tmp.format(layer), hparams.mom2_dtype, hparams.mom2_n_samples)
             for layer in hparams.layers]
    return [str(f) for f in files if not f.is_file()]


def corpus_texts(paths: Iterable[Path]) -> List[str]:
    """Running text from .txt files (a line each) and JSON lists (strings or records' text fields)."""
    texts = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"corpus file {str(path)!r} does not exist; fix --corpus")
        if path.suffix != ".json":
            texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            continue
        for record in json.loads(path.read_text(encoding="utf-8")):
            if isinstance(record, str):
                texts.append(record)
                continue
            for field in TEXT_FIELDS:
                value = record.get(field) if isinstance(record, dict) else None
                if isinstance(value, str) and value.strip():
                    texts.append(value.replace("nq question: ", "").strip())  # ZsRE's loc prefix is no text
    return texts


def _capture_inputs(model, layer_names: List[str], sums: Dict[str, torch.Tensor], counts: Dict[str, int], mask_ref):
    """Forward pre-hooks adding each projection's inputs (real tokens only) into sums."""
    handles = []
    for name in layer_names:
        module = model.get_submodule(name)

        def hook(_module, args, name=name):
            keys = args[0][mask_ref["mask"]].double()
            sums[name] += keys.T @ keys
            counts[name] += keys.shape[0]

        handles.append(module.register_forward_pre_hook(hook))
    return handles


def collect(model, tok, texts: List[str], layer_names: List[str], last_block, max_tokens: int, batch_size: int):
    """Sum of k k^T and token count for each layer over texts."""
    d = model.get_submodule(layer_names[0]).in_features
    sums = {name: torch.zeros(d, d, dtype=torch.float64) for name in layer_names}
    counts = {name: 0 for name in layer_names}
    mask_ref = {}
    handles = _capture_inputs(model, layer_names, sums, counts, mask_ref)

    def stop(*_):
        raise _StopForward

    handles.append(last_block.register_forward_hook(stop))
    # Similar lengths in a batch: less padding to compute.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    tok.padding_side = "right"
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc="second moments", unit="batch"):
                batch = tok([texts[i] for i in order[start:start + batch_size]], return_tensors="pt",
                            padding=True, truncation=True, max_length=max_tokens)
                mask_ref["mask"] = batch["attention_mask"].bool()
                try:
                    model(**batch)
                except _StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return sums, counts


def save(path: Path, moment_sum: torch.Tensor, count: int, dtype: str, n_samples: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{
        "mom2.constructor": np.array(SECOND_MOMENT_CONSTRUCTOR),
        "mom2.count": np.array(count),
        "mom2.mom2": moment_sum.numpy().astype(dtype),
        "sample_size": np.array(n_samples),
    })


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hparams", type=Path, default=EXAMPLES_HPARAMS / "MEMIT" / "smollm2-135m.yaml",
                        help="the MEMIT hparams file: layers, module names, mom2_* and stats_dir come from it")
    parser.add_argument("--model", default=None, help="local HF model directory (default: the embedded SmolLM2)")
    parser.add_argument("--corpus", type=Path, nargs="+", default=list(DEFAULT_CORPUS),
                        help=".txt (a text per line) or .json files (default: WikiBio train + ZsRE train)")
    parser.add_argument("--stats-dir", default=None, help="default: the hparams' stats_dir, relative to the repo root")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens kept per text")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="which texts are kept when the corpus is larger")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="recompute files that exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    hp = yaml.safe_load(args.hparams.read_text(encoding="utf-8"))
    model_path = resolve_model_path(args.model)
    stats_dir = REPO_ROOT / Path(args.stats_dir or hp["stats_dir"]).expanduser()  # relative: from the repo root
    n_samples, dtype = int(hp["mom2_n_samples"]), hp["mom2_dtype"]
    layer_names = [hp["rewrite_module_tmp"].format(layer) for layer in hp["layers"]]
    targets = {name: stats_file(stats_dir, model_path, hp["mom2_dataset"], name, dtype, n_samples)
               for name in layer_names}
    todo = [name for name, path in targets.items() if args.force or not path.is_file()]
    if not todo:
        LOG.info("all %d statistics files exist under %s (use --force to recompute)", len(targets), stats_dir)
        return 0

    texts = corpus_texts(args.corpus)
    if len(texts) < n_samples:
        sys.exit(f"the corpus has {len(texts)} texts, fewer than mom2_n_samples={n_samples} in {args.hparams}; "
                 "add --corpus files or lower mom2_n_samples there")
    texts = random.Random(args.seed).sample(texts, n_samples)

    from easyedit_baft.model_loading import load_model

    model, tok = load_model(model_path)
    deepest = max(hp["layers"])
    last_block = model.get_submodule(hp["layer_module_tmp"].format(deepest))
    sums, counts = collect(model, tok, texts, todo, last_block, args.max_tokens, args.batch_size)
    for name in todo:
        save(targets[name], sums[name], counts[name], dtype, n_samples)
        LOG.info("wrote %s (%d tokens)", targets[name], counts[name])
    return 0


if __name__ == "__main__":
    sys.exit(main())
