"""Second-moment statistics for MEMIT from a local text corpus, in the files the host reads.

MEMIT (and ROME with mom2_adjustment) needs, per edited layer, E[k k^T] over the inputs k of the MLP's
output projection; unless the file exists the host computes it from Wikipedia, out of an offline machine's
reach. This writes it from local text (by default WikiBio passages and ZsRE train questions, some 50k
tokens, where upstream uses 100k articles): MEMIT's numbers on it are indicative.

    python examples/memit_stats.py --hparams examples/hparams/MEMIT/smollm2-135m.yaml
"""

import argparse
import contextlib
import json
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

from easyedit_baft.model_loading import load_model, resolve_model_path  # noqa: E402
from easyedit_baft.records import default_data_dir  # noqa: E402

DEFAULT_CORPUS = [default_data_dir() / "knowedit" / "WikiBio" / "wikibio-train-all.json",
                  default_data_dir() / "zsre" / "zsre_mend_train-1k.json"]
TEXT_FIELDS = ("text", "src", "loc", "prompt")  # which record fields are running text, per corpus shape


class _StopForward(Exception):
    """Raised past the deepest layer needed: the rest of the model is not computed."""


def statistics_files(hp: dict, stats_dir, model_path: str) -> Dict[str, Path]:
    """Layer name -> the file the host's layer_stats reads for it (model folder: the path's last component)."""
    folder = Path(stats_dir) / str(model_path).rstrip("/").rsplit("/")[-1] / f"{hp['mom2_dataset']}_stats"
    names = [hp["rewrite_module_tmp"].format(layer) for layer in hp["layers"]]
    return {name: folder / f"{name}_{hp['mom2_dtype']}_mom2_{hp['mom2_n_samples']}.npz" for name in names}


def missing_statistics(hparams, model_path: str) -> List[str]:
    """The statistics files an editor with mom2_adjustment will read and that do not exist."""
    if not getattr(hparams, "mom2_adjustment", False):
        return []
    return [str(f) for f in statistics_files(vars(hparams), hparams.stats_dir, model_path).values() if not f.is_file()]


def corpus_texts(paths: Iterable[Path]) -> List[str]:
    """Running text from .txt files (a line each) and JSON lists (strings or records' text fields)."""
    texts = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"corpus file {str(path)!r} does not exist; fix --corpus")
        if path.suffix != ".json":
            texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            continue
        for record in json.loads(path.read_text(encoding="utf-8")):
            if isinstance(record, str):
                texts.append(record)
            elif isinstance(record, dict):
                values = [record.get(field) for field in TEXT_FIELDS]
                # ZsRE's locality prompts start with a prefix that is no text.
                texts += [v.replace("nq question: ", "").strip() for v in values if isinstance(v, str) and v.strip()]
    return texts


def collect(model, tok, texts: List[str], layer_names: List[str], last_block, max_tokens: int, batch_size: int):
    """Sum of k k^T and token count for each layer over texts, from forward pre-hooks on real tokens only."""
    modules = {model.get_submodule(name): name for name in layer_names}
    d = next(iter(modules)).in_features
    sums = {name: torch.zeros(d, d, dtype=torch.float64) for name in layer_names}
    counts = dict.fromkeys(layer_names, 0)
    batch = {}

    def add_inputs(module, args):
        keys = args[0][batch["attention_mask"].bool()].double()
        sums[modules[module]] += keys.T @ keys
        counts[modules[module]] += keys.shape[0]

    def stop(*_):
        raise _StopForward

    handles = [module.register_forward_pre_hook(add_inputs) for module in modules]
    handles.append(last_block.register_forward_hook(stop))
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths in a batch: less padding
    tok.padding_side = "right"
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), desc="second moments", unit="batch"):
                batch = tok([texts[i] for i in order[start:start + batch_size]], return_tensors="pt",
                            padding=True, truncation=True, max_length=max_tokens)
                with contextlib.suppress(_StopForward):
                    model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return sums, counts


def save(path: Path, moment_sum: torch.Tensor, count: int, dtype: str, n_samples: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{"mom2.constructor": np.array("easyeditor.util.runningstats.SecondMoment()"),
                      "mom2.count": np.array(count), "mom2.mom2": moment_sum.numpy().astype(dtype),
                      "sample_size": np.array(n_samples)})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hparams", type=Path, default=REPO_ROOT / "examples/hparams/MEMIT/smollm2-135m.yaml",
                        help="the MEMIT hparams file: layers, module names, mom2_* and stats_dir come from it")
    parser.add_argument("--model", default=None, help="local HF model directory (default: the embedded SmolLM2)")
    parser.add_argument("--corpus", type=Path, nargs="+", default=DEFAULT_CORPUS, help=".txt (a text a line) or .json")
    parser.add_argument("--stats-dir", help="default: the hparams' stats_dir, relative to the repo root")
    parser.add_argument("--max-tokens", type=int, default=256, help="tokens kept per text")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="which texts are kept when the corpus is larger")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="recompute files that exist")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hp = yaml.safe_load(args.hparams.read_text(encoding="utf-8"))
    model_path = resolve_model_path(args.model)
    stats_dir = REPO_ROOT / Path(args.stats_dir or hp["stats_dir"]).expanduser()  # relative: from the repo root
    targets = statistics_files(hp, stats_dir, model_path)
    todo = [name for name, path in targets.items() if args.force or not path.is_file()]
    if not todo:
        print(f"all {len(targets)} statistics files exist under {stats_dir} (use --force to recompute)")
        return 0
    n_samples = int(hp["mom2_n_samples"])
    texts = corpus_texts(args.corpus)
    if len(texts) < n_samples:
        sys.exit(f"the corpus has {len(texts)} texts, fewer than mom2_n_samples={n_samples} in {args.hparams}; "
                 "add --corpus files or lower mom2_n_samples there")
    model, tok = load_model(model_path)
    last_block = model.get_submodule(hp["layer_module_tmp"].format(max(hp["layers"])))
    sums, counts = collect(model, tok, random.Random(args.seed).sample(texts, n_samples), todo, last_block,
                           args.max_tokens, args.batch_size)
    for name in todo:
        save(targets[name], sums[name], counts[name], hp["mom2_dtype"], n_samples)
        print(f"wrote {targets[name]} ({counts[name]} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
