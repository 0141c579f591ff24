"""Report of a benchmark run: results.json, results.md (tables), plots, and the targets check."""

import json
from pathlib import Path
from typing import Dict, List, Optional

from bench_methods import METHODS
from bench_progress import checkpoint_dir, journal_path, read_journal, read_progress
from bench_scenarios import SCORES, Scenario, mean_scores
from easyedit_baft.metrics import harmonic_mean, knowedit_summary, mean

TABLE_COLUMNS = ["method", "rel", "gen", "loc", "port", "HM(rel,gen,loc)", "em rel", "em gen", "em loc", "em port",
                 "em HM", "fluency", "s/edit", "params/edit", "peak MB", "edit size"]
PLOTTED_SCORES = [("rel", "reliability (rewrite_acc)"), ("gen", "generalization (rephrase_acc)"), ("loc", "locality")]
PARAMS_SHARE_OF_ROME = 0.01
METHOD_RANK = {name: rank for rank, name in enumerate(METHODS)}  # table order; a method not listed comes last
RUN_FIELDS = ("method", "set", "scenario", "n")  # what names a run, in a result and in a progress header
COST_FIELDS = ("params_per_edit", "edit_bytes")


def _table_order(run: dict) -> tuple:
    """n, set, scenario (single, batches, sequences, each by size), then method as METHODS lists them."""
    scenario = Scenario.parse(run["scenario"])
    kind = ("single", "batch", "seq").index(scenario.kind)
    return run["n"], run["set"], kind, scenario.size, scenario.batch, METHOD_RANK.get(run["method"], len(METHODS))


def _partial_of(result_file: Path) -> Optional[dict]:
    """A run still under way (or cut off), marked partial: a single-edit run's journalled records so far,
    or a sequence's edits made so far and its scores at the checkpoints it has passed."""
    journal = journal_path(result_file)
    lines = read_journal(journal) if journal.is_file() else []
    if len(lines) > 1:  # its header and at least one record
        header, entries = lines[0], lines[1:]
        scores = [e["scores"] for e in entries]
        return {"status": "partial", **{k: header[k] for k in RUN_FIELDS}, "n_scored": len(entries),
                **mean_scores(scores), **{k: mean([e["costs"].get(k) for e in entries]) for k in COST_FIELDS},
                "seconds_per_edit": mean([e["edit_seconds"] for e in entries]), "peak_mb": None, "records": scores}
    progress = read_progress(checkpoint_dir(result_file))
    if progress is None:
        return None
    made = progress["bookkeeping"]
    return {"status": "partial", **{k: progress["header"][k] for k in RUN_FIELDS}, "n_edits": made["n_edits"],
            "checkpoints": made["checkpoints"], "seconds_per_edit": mean(made["edit_seconds"])}


def with_harmonic_means(run: dict) -> dict:
    """The run with hm and em_hm: the harmonic means of rel, gen and loc under both scorings."""
    em = run.get("em") or {}
    run["hm"] = harmonic_mean([run.get("rel"), run.get("gen"), run.get("loc")])
    run["em_hm"] = harmonic_mean([em.get("rel"), em.get("gen"), em.get("loc")]) if em else None
    return run


def load_runs(results_dir: Path) -> List[dict]:
    """Every result under RESULTS/runs/n*/set/scenario/ (several N may coexist); a run not finished is
    shown from its journal or sequence checkpoint, as partial, unless a finished result exists."""
    runs, folder = [], results_dir / "runs"
    result_files = {*folder.glob("n*/*/*/*.json"),  # and those that a run under way has not written yet
                    *(p.with_name(p.name.split(".partial")[0] + ".json") for p in folder.glob("n*/*/*/*.partial*"))}
    for path in sorted(result_files):
        saved = json.loads(path.read_text()) if path.is_file() else {}
        run = saved if saved.get("status") == "ok" else _partial_of(path) or saved
        records = run.pop("records", None)  # per-request scores stay in runs/
        if run.get("status") in ("ok", "partial"):
            with_harmonic_means(run)
            if run["set"].startswith("knowedit") and records:  # also summarised KnowEdit's own way
                run["knowedit"] = knowedit_summary(records)
        runs += [run] if run else []
    return sorted(runs, key=_table_order)


def _grouped(runs: List[dict]) -> Dict[tuple, List[dict]]:
    groups: Dict[tuple, List[dict]] = {}  # by (n, set, scenario), in table order
    for run in runs:
        groups.setdefault((run["n"], run["set"], run["scenario"]), []).append(run)
    return groups


COUNT_UNITS = (("M", 1e6), ("k", 1e3), ("", 1))
BYTE_UNITS = ((" MB", 1024 ** 2), (" KB", 1024), (" B", 1))


def pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def num(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _scaled(value, units) -> str:
    """value in the largest of units (suffix, size) it reaches; below them all, whole in the last one."""
    if value is None:
        return "n/a"
    suffix, size = next((unit for unit in units if value >= unit[1]), units[-1])
    return f"{value / size:.{1 if size > 1 else 0}f}{suffix}"


def markdown_head(columns: List[str]) -> List[str]:
    return [markdown_row(columns), "|" + "---|" * len(columns)]


def markdown_row(cells: List[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_row(run: dict) -> List[str]:
    """A run's cells under TABLE_COLUMNS; a run without final scores gets what it has in one cell."""
    if run.get("status") not in ("ok", "partial"):
        why = run.get("reason") or run.get("error") or run.get("status")
        note = f"{run.get('status')}: {why}"[:200]
    elif run["status"] == "partial" and "n_edits" in run:
        scored = ", ".join(f"after {c['edits']}: {pct(c['rel'])} / {pct(c['gen'])} / {pct(c['loc'])}"
                           for c in run["checkpoints"])
        note = (f"partial: {run['n_edits']} of {Scenario.parse(run['scenario']).size} edits made; "
                f"rel / gen / loc {scored or 'not yet scored'}")
    else:
        name = run["method"] if run["status"] == "ok" else f"{run['method']} (partial: {run['n_scored']}/{run['n']})"
        em = run.get("em") or {}
        return [name, *[pct(run[k]) for k in SCORES], pct(run["hm"]), *[pct(em.get(k)) for k in SCORES],
                pct(run.get("em_hm")), num(run["fluency"]), num(run["seconds_per_edit"]),
                _scaled(run.get("params_per_edit"), COUNT_UNITS), num(run.get("peak_mb"), 0),
                _scaled(run.get("edit_bytes"), BYTE_UNITS)]
    return [run["method"], note] + [""] * (len(TABLE_COLUMNS) - 2)


def markdown_tables(runs: List[dict], args) -> str:
    legend = (
        "rel/gen/loc/port: EasyEdit's rewrite_acc, rephrase_acc, locality, portability (token accuracy %, teacher "
        "forcing; GRACE by generation, as the host scores it); HM: harmonic mean of rel, gen, loc. em: exact match "
        "by generation, one rule for every method (rel/gen/port: the greedy continuation of the prompt alone starts "
        "with the normalised answer; loc: that of the unrelated prompt is the unedited model's). fluency: the host's "
        f"n-gram entropy of 100 generated tokens (first {args.fluency_n} edits). seqT: scored on all T edits after "
        "the last. s/edit: wall time of the edit call. params/edit: parameters an edit trains or changes (BaFT: its "
        "interventions'; ROME/MEMIT/FT: elements of the weights changed; GRACE: codebook elements). peak MB: the "
        "run's peak RSS, model included. edit size: bytes that store the edits (single: one; seqT: all T).")
    lines = [f"# Benchmark results: {args.model}", "", legend, ""]
    for (n, data_set, scenario), rows in _grouped(runs).items():
        lines += [f"## {data_set} / {scenario} (first {n} records)", "", *markdown_head(TABLE_COLUMNS)]
        lines += [markdown_row(table_row(r)) for r in rows] + [""] + knowedit_table(rows)
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
             *markdown_head(header)]
    for run in rows:
        k = run["knowedit"]
        fluency = None if k["fluency"] is None else 100 * k["fluency"]
        cells = ([table_row(run)[0], pct(k["edit_succ"]), pct(k["portability"])]
                 + [pct(k["portability_kinds"].get(n)) for n in port_kinds] + [pct(k["locality"])]
                 + [pct(k["locality_kinds"].get(n)) for n in loc_kinds] + [num(fluency, 1), pct(k["hm"])])
        lines.append(markdown_row(cells))
    return lines + [""]


def check_targets(runs: List[dict]) -> List[str]:
    """One line per target and (N, set, scenario), met or not, with the numbers: BaFT's harmonic means the
    highest for single and sequential editing, its s/edit at most ROME's, its params/edit at most 1% of ROME's."""
    lines = []
    for (n, data_set, scenario), group in _grouped(runs).items():
        where = f"{data_set}/{scenario} (N={n})"
        ok = {r["method"]: r for r in group if r["status"] == "ok"}
        baft, rome = ok.get("BaFT"), ok.get("ROME")
        missing = [r["method"] for r in group if r["status"] != "ok"]
        note = f" (not run or not finished: {', '.join(missing)})" if missing else ""
        for field, label in [] if scenario.startswith("batch") else [("hm", "HM"), ("em_hm", "em HM")]:
            rivals = [r for r in ok.values() if r.get(field) is not None and r is not baft]
            if baft is None or baft.get(field) is None or not rivals:
                lines.append(f"[n/a    ] {where}: BaFT {label} highest: not enough results")
                continue
            best_rival = max(r[field] for r in rivals)
            # A tie (e.g. every method at 0) is not "highest": it is reported as such.
            verdict = "met" if baft[field] > best_rival else ("tie" if baft[field] == best_rival else "NOT MET")
            others = ", ".join(f"{r['method']} {pct(r[field])}" for r in rivals)
            lines.append(f"[{verdict:7}] {where}: BaFT {label} {pct(baft[field])} highest? vs {others}{note}")
        if baft and rome:
            b, r = baft["seconds_per_edit"], rome["seconds_per_edit"]
            lines.append(f"[{'met' if b <= r else 'NOT MET':7}] {where}: BaFT s/edit {b:.2f} <= ROME {r:.2f}")
            bp, rp = baft.get("params_per_edit"), rome.get("params_per_edit")
            if bp is not None and rp:
                verdict = "met" if bp <= PARAMS_SHARE_OF_ROME * rp else "NOT MET"
                lines.append(f"[{verdict:7}] {where}: BaFT params/edit {bp:.0f} = "
                             f"{100 * bp / rp:.2f}% of ROME's {rp:.0f} (target <= 1%)")
    return lines


def curve_points(runs: List[dict], n: int, data_set: str, method: str) -> Dict[str, List[tuple]]:
    """(number of edits, score) per score: single is 1 edit; seqT gives its checkpoints."""
    points = {key: [] for key, _ in PLOTTED_SCORES}
    for run in runs:
        # A sequence still under way has real scores at the checkpoints it has passed.
        usable = run["status"] == "ok" or (run["status"] == "partial" and "n_edits" in run)
        if (run["n"], run["set"], run["method"]) != (n, data_set, method) or not usable:
            continue
        for step in [{"edits": 1, **run}] if run["scenario"] == "single" else run.get("checkpoints", []):
            for key in points:
                if step.get(key) is not None:
                    points[key].append((step["edits"], step[key]))
    return {k: sorted(set(v)) for k, v in points.items()}


def write_plots(runs: List[dict], args) -> List[Path]:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    plt.switch_backend("Agg")
    paths = []
    methods = sorted({r["method"] for r in runs}, key=lambda method: METHOD_RANK.get(method, len(METHODS)))
    with_sequences = {(r["n"], r["set"]) for r in runs if r["scenario"].startswith("seq")}
    for n, data_set in sorted({(r["n"], r["set"]) for r in runs if r["status"] == "ok"} & with_sequences):
        curves = {method: curve_points(runs, n, data_set, method) for method in methods}
        fig, axes = plt.subplots(1, len(PLOTTED_SCORES), figsize=(15, 4.2))
        for ax, (key, title) in zip(axes, PLOTTED_SCORES):
            for method, points in curves.items():
                if points[key]:
                    ax.plot([p[0] for p in points[key]], [100 * p[1] for p in points[key]], marker="o", label=method)
            ax.set(xscale="log", xlabel="number of sequential edits (1 = single)", ylabel="%", ylim=(-2, 102),
                   title=title)
            steps = sorted({p[0] for points in curves.values() for p in points[key]})
            ax.set_xticks(steps, [str(step) for step in steps])  # plain edit counts, not powers of ten
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{data_set}, first {n} records: scores on all edits so far, {args.model}")
        fig.tight_layout()
        paths.append(args.results_dir / f"sequential_{data_set}_n{n}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(args, quiet: bool) -> None:
    runs = load_runs(args.results_dir)
    if not runs:
        return
    targets = check_targets(runs)
    summary = {"model": args.model, "runs": runs, "targets": targets}
    (args.results_dir / "results.json").write_text(json.dumps(summary, indent=1))
    table = markdown_tables(runs, args) + "\n## Targets\n\n" + "\n".join(f"- {t}" for t in targets) + "\n"
    (args.results_dir / "results.md").write_text(table)
    plots = write_plots(runs, args)
    if not quiet:
        print(table)
        print("Plots: " + ", ".join(str(p) for p in plots))
