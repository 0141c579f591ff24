"""Report of a benchmark run: results.json, results.md (tables), plots, and the targets check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from bench_data import is_knowedit
from bench_methods import METHODS
from bench_progress import checkpoint_dir, journal_path, read_journal, read_progress
from bench_scenarios import Scenario
from easyedit_baft.metrics import harmonic_mean, knowedit_summary, mean

TABLE_COLUMNS = ["method", "rel", "gen", "loc", "port", "HM(rel,gen,loc)", "em rel", "em gen", "em loc", "em port",
                 "em HM", "fluency", "s/edit", "params/edit", "peak MB", "edit size"]
PLOTTED_SCORES = [("rel", "reliability (rewrite_acc)"), ("gen", "generalization (rephrase_acc)"),
                  ("loc", "locality")]
PARAMS_SHARE_OF_ROME = 0.01
METHOD_ORDER = list(METHODS)


def _scenario_order(name: str) -> tuple:
    scenario = Scenario.parse(name)
    return ("single", "batch", "seq").index(scenario.kind), scenario.size, scenario.batch


def _method_order(name: str) -> int:
    return METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)


def partial_run(path: Path) -> Optional[dict]:
    """A single-edit run still under way (or cut off): its journal's records so far, marked partial."""
    lines = read_journal(path)
    if len(lines) < 2:
        return None
    header, entries = lines[0], lines[1:]
    scores = [e["scores"] for e in entries]
    means = {k: mean([s.get(k) for s in scores]) for k in ("rel", "gen", "loc", "port", "fluency")}
    costs = {k: mean([e["costs"].get(k) for e in entries]) for k in ("params_per_edit", "edit_bytes")}
    return {"status": "partial", "method": header["method"], "set": header["set"], "scenario": header["scenario"],
            "n": header["n"], "n_scored": len(entries), **means, **costs,
            "seconds_per_edit": mean([e["edit_seconds"] for e in entries]), "peak_mb": None, "records": scores}


def partial_sequence(path: Path) -> Optional[dict]:
    """A sequential run still under way (or cut off): the edits made so far and its scores at checkpoints."""
    progress = read_progress(path)
    if progress is None:
        return None
    header, made = progress["header"], progress["bookkeeping"]
    return {"status": "partial", "method": header["method"], "set": header["set"], "scenario": header["scenario"],
            "n": header["n"], "n_edits": made["n_edits"], "checkpoints": made["checkpoints"],
            "seconds_per_edit": mean(made["edit_seconds"])}


def _partial_of(result_file: Path) -> Optional[dict]:
    journal, checkpoint = journal_path(result_file), checkpoint_dir(result_file)
    if journal.is_file():
        return partial_run(journal)
    return partial_sequence(checkpoint) if checkpoint.is_dir() else None


def load_runs(results_dir: Path) -> List[dict]:
    """Every result under RESULTS/runs/n*/set/scenario/, whatever run wrote it (several N may coexist).

    A run that has not finished is shown from its journal or sequence checkpoint, as partial,
    unless a finished result exists.
    """
    runs = []
    for path in sorted((results_dir / "runs").glob("n*/*/*/*.json")):
        run = json.loads(path.read_text())
        if run.get("status") != "ok":
            run = _partial_of(path) or run
        runs.append(run)
    for partial in sorted((results_dir / "runs").glob("n*/*/*/*.partial*")):
        result_file = partial.with_name(partial.name.split(".partial")[0] + ".json")
        if not result_file.is_file():
            run = _partial_of(result_file)
            runs.extend([run] if run else [])
    for run in runs:
        records = run.pop("records", None)  # per-request scores stay in runs/
        if run.get("status") in ("ok", "partial"):
            run["hm"] = harmonic_mean([run.get("rel"), run.get("gen"), run.get("loc")])
            em = run.get("em") or {}
            run["em_hm"] = harmonic_mean([em.get("rel"), em.get("gen"), em.get("loc")]) if em else None
            if is_knowedit(run["set"]) and records:
                run["knowedit"] = knowedit_summary(records)
    runs.sort(key=lambda r: (r["n"], r["set"], _scenario_order(r["scenario"]), _method_order(r["method"])))
    return runs


def _groups(runs: List[dict]) -> List[tuple]:
    """(n, set, scenario) in table order."""
    seen = []
    for run in runs:
        key = (run["n"], run["set"], run["scenario"])
        if key not in seen:
            seen.append(key)
    return seen


# ---- formatting ------------------------------------------------------------------------------


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _num(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _count(value) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _bytes(value) -> str:
    if value is None:
        return "n/a"
    for unit, size in (("MB", 1024 ** 2), ("KB", 1024)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def table_row(run: dict) -> List[str]:
    if run.get("status") not in ("ok", "partial"):
        why = run.get("reason") or run.get("error") or run.get("status")
        return [run["method"], f"{run.get('status')}: {why}"[:200]] + [""] * (len(TABLE_COLUMNS) - 2)
    if run["status"] == "partial" and "n_edits" in run:
        scored = ", ".join(f"after {c['edits']}: {_pct(c['rel'])} / {_pct(c['gen'])} / {_pct(c['loc'])}"
                           for c in run["checkpoints"])
        text = (f"partial: {run['n_edits']} of {Scenario.parse(run['scenario']).size} edits made; "
                f"rel / gen / loc {scored or 'not yet scored'}")
        return [run["method"], text] + [""] * (len(TABLE_COLUMNS) - 2)
    name = run["method"] if run["status"] == "ok" else f"{run['method']} (partial: {run['n_scored']}/{run['n']})"
    em = run.get("em") or {}
    return [name, _pct(run["rel"]), _pct(run["gen"]), _pct(run["loc"]), _pct(run["port"]), _pct(run["hm"]),
            *[_pct(em.get(k)) for k in ("rel", "gen", "loc", "port")], _pct(run.get("em_hm")),
            _num(run["fluency"]), _num(run["seconds_per_edit"]),
            _count(run.get("params_per_edit")), _num(run.get("peak_mb"), 0), _bytes(run.get("edit_bytes"))]


def markdown_tables(runs: List[dict], args) -> str:
    lines = [
        f"# Benchmark results: {args.model}",
        "",
        "rel/gen/loc/port: EasyEdit's rewrite_acc, rephrase_acc, locality and portability (token accuracy, %, "
        "teacher forcing; GRACE by generation, as the host scores it). HM: harmonic mean of rel, gen, loc. "
        "em: generation-based exact match, one rule for every method (rel/gen/port: the normalised answer starts "
        "the greedy continuation of the prompt alone; loc: the greedy continuation of the unrelated prompt is "
        "unchanged from the unedited model's). "
        "fluency: the host's n-gram entropy of 100 generated tokens (first "
        f"{args.fluency_n} edits). Sequential runs (seqT) are scored on all T edits after the last one. "
        "s/edit: wall time of the method's edit call. params/edit: parameters one edit trains or changes "
        "(BaFT: intervention parameters; ROME/MEMIT/FT: elements of the weights they change; GRACE: codebook "
        "elements per edit). peak MB: peak RSS of the run (model included). edit size: bytes that store the "
        "edit (single: per edit; seqT: all T edits together).",
        "",
    ]
    for n, data_set, scenario in _groups(runs):
        rows = [r for r in runs if (r["n"], r["set"], r["scenario"]) == (n, data_set, scenario)]
        lines += [f"## {data_set} / {scenario} (first {n} records)", "",
                  "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(table_row(r)) + " |" for r in rows]
        lines.append("")
        lines += knowedit_table(rows)
    return "\n".join(lines)


def knowedit_table(rows: List[dict]) -> List[str]:
    """KnowEdit's own summary of a KnowEdit set's runs, with each kind of portability and locality."""
    rows = [r for r in rows if r.get("knowedit")]
    if not rows:
        return []
    port_kinds = list(dict.fromkeys(k for r in rows for k in r["knowedit"]["portability_kinds"]))
    loc_kinds = list(dict.fromkeys(k for r in rows for k in r["knowedit"]["locality_kinds"]))
    header = (["method", "Edit Succ", "Portability"] + [f"Port. {k}" for k in port_kinds] + ["Locality"]
              + [f"Loc. {k}" for k in loc_kinds] + ["Fluency", "HM(succ,port,loc)"])
    lines = ["KnowEdit's summary (its script's definitions; Fluency: n-gram entropy x 100, as it prints it):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in rows:
        k = run["knowedit"]
        fluency = None if k["fluency"] is None else 100 * k["fluency"]
        cells = ([_pct(k["edit_succ"]), _pct(k["portability"])] + [_pct(k["portability_kinds"].get(n)) for n in port_kinds]
                 + [_pct(k["locality"])] + [_pct(k["locality_kinds"].get(n)) for n in loc_kinds]
                 + [_num(fluency, 1), _pct(k["hm"])])
        lines.append("| " + " | ".join([table_row(run)[0]] + cells) + " |")
    return lines + [""]


# ---- targets ----------------------------------------------------------------------------------


def _find(runs, method, key) -> Optional[dict]:
    for run in runs:
        if run["method"] == method and (run["n"], run["set"], run["scenario"]) == key and run["status"] == "ok":
            return run
    return None


def check_targets(runs: List[dict]) -> List[str]:
    """One line per target and (N, set, scenario): met / not met, with the numbers.

    BaFT's harmonic mean must be the highest for single and sequential editing; its s/edit at
    most ROME's; its params/edit at most 1% of ROME's.
    """
    lines = []
    for key in _groups(runs):
        n, data_set, scenario = key
        where = f"{data_set}/{scenario} (N={n})"
        ok = [r for r in runs if (r["n"], r["set"], r["scenario"]) == key and r["status"] == "ok"]
        baft, rome = _find(ok, "BaFT", key), _find(ok, "ROME", key)
        for field, label in (("hm", "HM"), ("em_hm", "em HM")):
            if scenario.startswith("batch"):
                break
            scored = [r for r in ok if r.get(field) is not None]
            if baft is None or baft.get(field) is None or len(scored) < 2:
                lines.append(f"[n/a    ] {where}: BaFT {label} highest: not enough results")
                continue
            rivals = [r for r in scored if r is not baft]
            best_rival = max(r[field] for r in rivals)
            # A tie (e.g. every method at 0) is not "highest": it is reported as such.
            verdict = "met" if baft[field] > best_rival else ("tie" if baft[field] == best_rival else "NOT MET")
            others = ", ".join(f"{r['method']} {_pct(r[field])}" for r in rivals)
            missing = [r["method"] for r in runs if (r["n"], r["set"], r["scenario"]) == key and r["status"] != "ok"]
            note = f" (not run or not finished: {', '.join(missing)})" if missing else ""
            lines.append(f"[{verdict:7}] {where}: BaFT {label} {_pct(baft[field])} highest? vs {others}{note}")
        if baft and rome:
            b, r = baft["seconds_per_edit"], rome["seconds_per_edit"]
            verdict = "met" if b <= r else "NOT MET"
            lines.append(f"[{verdict:7}] {where}: BaFT s/edit {b:.2f} <= ROME {r:.2f}")
            bp, rp = baft.get("params_per_edit"), rome.get("params_per_edit")
            if bp is not None and rp:
                verdict = "met" if bp <= PARAMS_SHARE_OF_ROME * rp else "NOT MET"
                lines.append(f"[{verdict:7}] {where}: BaFT params/edit {bp:.0f} = "
                             f"{100 * bp / rp:.2f}% of ROME's {rp:.0f} (target <= 1%)")
    return lines


# ---- plots ------------------------------------------------------------------------------------


def curve_points(runs: List[dict], n: int, data_set: str, method: str) -> Dict[str, List[tuple]]:
    """(number of edits, score) per score: single is 1 edit; seqT gives its checkpoints."""
    points = {key: [] for key, _ in PLOTTED_SCORES}
    for run in runs:
        # A sequence still under way has real scores at the checkpoints it has passed.
        usable = run["status"] == "ok" or (run["status"] == "partial" and "n_edits" in run)
        if (run["n"], run["set"], run["method"]) != (n, data_set, method) or not usable:
            continue
        steps = [{"edits": 1, **run}] if run["scenario"] == "single" else run.get("checkpoints", [])
        for step in steps:
            for key in points:
                if step.get(key) is not None:
                    points[key].append((step["edits"], step[key]))
    return {k: sorted(set(v)) for k, v in points.items()}


def write_plots(runs: List[dict], args) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    paths = []
    methods = sorted({r["method"] for r in runs}, key=_method_order)
    for n, data_set in sorted({(r["n"], r["set"]) for r in runs if r["status"] == "ok"}):
        if not any(r["set"] == data_set and r["n"] == n and r["scenario"].startswith("seq") for r in runs):
            continue
        fig, axes = plt.subplots(1, len(PLOTTED_SCORES), figsize=(15, 4.2))
        for ax, (key, title) in zip(axes, PLOTTED_SCORES):
            for method in methods:
                pts = curve_points(runs, n, data_set, method)[key]
                if pts:
                    ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=method)
            ax.set_xscale("log")
            steps = sorted({p[0] for m in methods for p in curve_points(runs, n, data_set, m)[key]})
            ax.set_xticks(steps, [str(step) for step in steps])  # plain edit counts, not powers of ten
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("number of sequential edits (1 = single)")
            ax.set_ylabel("%")
            ax.set_ylim(-2, 102)
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{data_set}, first {n} records: scores on all edits so far, {args.model}")
        fig.tight_layout()
        path = args.results_dir / f"sequential_{data_set}_n{n}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(args, quiet: bool) -> None:
    runs = load_runs(args.results_dir)
    if not runs:
        return
    targets = check_targets(runs)
    (args.results_dir / "results.json").write_text(
        json.dumps({"model": args.model, "runs": runs, "targets": targets}, indent=1))
    table = markdown_tables(runs, args) + "\n## Targets\n\n" + "\n".join(f"- {t}" for t in targets) + "\n"
    (args.results_dir / "results.md").write_text(table)
    plots = write_plots(runs, args)
    if not quiet:
        print(table)
        print("Plots: " + ", ".join(str(p) for p in plots))
