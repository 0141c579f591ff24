"""Memory over a long run of sequential BaFT edits on a tiny random model.

Makes --edits sequential edits (default 1000) on one tiny Llama and prints, every --every edits,
the process's resident memory (from /proc/self/statm), the number of forward hooks on the model,
edit_count, len(replay_memory), len(edit_log), Python's tracked objects and the time per edit.
It also counts how many new edits hold right after they are made and, at the end, how many of
all edits still hold. It ends with a verdict line giving the measured RSS growth. It prints
numbers; it asserts nothing.

    python benchmarks/long_run_memory.py --edits 1000 --every 100
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from easyedit_baft import layers as plumbing  # noqa: E402
from easyedit_baft.baft_main import apply_baft_to_model  # noqa: E402
from easyedit_baft.hparams import BaFTHyperParams  # noqa: E402

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SUBJECTS = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
RELATIONS = ["The home town of {} is", "The favourite food of {} is", "{} works as a", "{} was born in"]
TARGETS = ["Lima", "Kyiv", "Oslo", "Bern", "Doha", "Rome", "Riga", "Baku", "Suva", "Apia", "Nuuk"]


def rss_mib() -> float:
    """Resident set size: the second field of /proc/self/statm, in pages."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE / 2**20


def request(k: int) -> dict:
    """The k-th of an endless series of distinct requests."""
    base = SUBJECTS[k % len(SUBJECTS)]
    subject = base if k < 40 else f"{base} {k // 40}"
    relation = RELATIONS[(k // len(SUBJECTS)) % len(RELATIONS)]
    return {"prompt": relation.format(subject), "target_new": TARGETS[(7 * k) % len(TARGETS)], "subject": subject}


def byte_tokenizer():
    """One token per byte, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


def target_holds(model, tok, req: dict) -> bool:
    """EasyEdit's rewrite check: every target token is the argmax under teacher forcing."""
    n_prompt = len(tok(req["prompt"])["input_ids"])
    ids = tok(req["prompt"] + " " + req["target_new"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        predicted = model(input_ids=ids).logits[0].argmax(-1)
    return bool(torch.equal(predicted[n_prompt - 1 : -1], ids[0, n_prompt:]))


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="print a line every this many edits")
    parser.add_argument("--n-steps", type=int, default=20, help="cap on training steps per edit")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny model: 1 is fastest)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    tok, model = byte_tokenizer(), tiny_llama(args.seed)
    hp = BaFTHyperParams(model_name="tiny-llama", layers=args.layers, rank=args.rank, lr=5e-2,
                         n_steps=args.n_steps, n_locality_prompts=8, n_context_prefixes=1, max_length=64)
    gc.collect()
    start_rss = rss_mib()
    print(f"tiny Llama (d=64, 4 layers), layers={hp.layers}, rank={hp.rank}, n_steps<={hp.n_steps}, "
          f"replay_edits={hp.replay_edits}, torch threads={torch.get_num_threads()}")
    print(f"before any edit: rss={start_rss:.1f} MiB, hooks={hook_count(model)}")
    print(f"{'edits':>6} {'rss_MiB':>8} {'d_rss':>7} {'hooks':>5} {'edit_count':>10} {'replay':>6} "
          f"{'log':>6} {'py_objects':>10} {'s/edit':>7} {'new_held':>8}")

    rows, hooks_seen, held, window_start = [], set(), 0, time.perf_counter()
    for k in range(args.edits):
        apply_baft_to_model(model, tok, [request(k)], hp)
        state = plumbing.get_state(model)
        hooks_seen.add(hook_count(model))
        held += target_holds(model, tok, request(k))  # the new edit, right after it was made
        if (k + 1) % args.every == 0 or k + 1 == args.edits:
            gc.collect()
            rss, now = rss_mib(), time.perf_counter()
            done = k + 1
            window = done - (rows[-1][0] if rows else 0)
            rows.append((done, rss))
            print(f"{done:>6} {rss:>8.1f} {rss - start_rss:>+7.1f} {hook_count(model):>5} {state.edit_count:>10} "
                  f"{len(state.replay_memory):>6} {len(state.edit_log):>6} {len(gc.get_objects()):>10} "
                  f"{(now - window_start) / window:>7.2f} {held:>4}/{window:<3}", flush=True)
            window_start, held = now, 0

    state = plumbing.get_state(model)
    usage = torch.cat([m.basis_usage for m in state.interventions.values()])
    consistent = state.edit_count == len(state.replay_memory) == len(state.edit_log) == args.edits
    end_rss = rows[-1][1]
    # Growth after the first reporting window leaves out one-off costs (imports, allocator warm-up).
    warm_edits, warm_rss = rows[0] if len(rows) > 1 else (0, start_rss)
    per_edit_kib = (end_rss - warm_rss) * 1024 / max(args.edits - warm_edits, 1)
    retained = sum(target_holds(model, tok, request(k)) for k in range(args.edits))
    print(f"edits holding at the end: {retained}/{args.edits}")
    print(f"basis_usage: finite={bool(torch.isfinite(usage).all())}, total={float(usage.sum()):.2f}")
    print(f"VERDICT: rss {start_rss:.1f} -> {end_rss:.1f} MiB over {args.edits} edits "
          f"(+{end_rss - start_rss:.1f} MiB; {per_edit_kib:.1f} KiB/edit after edit {warm_edits}); "
          f"hooks constant: {len(hooks_seen) == 1} ({sorted(hooks_seen)}); "
          f"edit_count == len(replay_memory) == len(edit_log) == {args.edits}: {consistent}")


if __name__ == "__main__":
    main()
