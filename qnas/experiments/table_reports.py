"""Reports of the paper's tables from an experiment's results folder: Table II (blocks),
Table III (hardware-aware NAS per space, device and budget), Table IV (kernel-size ablation)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..errors import QnasError
from ..nas.best import load_best
from ..runtime.files import write_text_atomic
from . import plots
from .markdown import md_table, ms, provenance_md
from .results import BLOCKS_CSV, REPORT, RESULTS, read_csv, read_json
from .run_report import search_run_report


def nas_report(folder: Path, manifest: dict) -> Path:
    config = manifest["config"]
    results = read_csv(folder / RESULTS)
    if results is None or not len(results):
        raise QnasError(f"{folder / RESULTS} is missing or empty: the experiment has no "
                        f"finished search yet")
    spaces = list(dict.fromkeys(results["space"]))
    targets = list(dict.fromkeys(zip(results["device"], results["budget_ms"])))
    devices = list(dict.fromkeys(results["device"]))
    ok = results[results["status"] == "ok"]
    retrained = "retrain_top1" in results
    md = [f"# {manifest['name']}: {manifest.get('description') or 'hardware-aware NAS'}", "",
          *provenance_md(manifest), ""]
    search = {**config.get("search", {}), **(manifest.get("resolved") or {}).get("search", {})}
    predictors = "; ".join(f"{device}: {source}" for device, source in dict.fromkeys(
        zip(ok["device"], ok["predictor"])) if isinstance(source, str))
    md += ["## Settings", "",
           f"- data `{config.get('data', 'digits')}` at {config.get('resolution', 32)} px, seed "
           f"{config.get('seed', 0)}; spaces: {', '.join(spaces)}",
           f"- per space ONE warm-up of {search.get('warmup_epochs', '(qnas search default)')} "
           f"epochs (shared by its searches), then {search.get('epochs', '(default)')} search "
           f"epochs per (device, budget); loss {search.get('loss', '(default)')} (λ "
           f"{search.get('lam', '?')}), batch {search.get('batch_size', '?')}, arch lr "
           f"{(search.get('optim') or {}).get('arch_lr', '?')}",
           f"- latency predictors (source and version): {predictors or '–'}",
           "- top-1: validation split, the child with weights inherited from the supernet"
           + (f"; 'retrained': after {config.get('retrain_epochs')} epochs of `qnas retrain`"
              if retrained else " (no retraining: `retrain_epochs: 0`)"),
           "- MACs and parameters: the deployment network (the space's input shape "
           f"{'×'.join(map(str, _input_shape(ok, folder)))} and classes); latency: the target "
           "device's predictor on the whole child (not a measurement)", ""]

    # the comparison: per device, every space side by side at the same budget
    rows = []
    notes = set()
    for device, budget in targets:
        row = {"device": device, "budget": ms(budget)}
        for space in spaces:
            match = results[(results["space"] == space) & (results["device"] == device)
                            & (results["budget_ms"] == budget)]
            if not len(match):
                continue
            r = match.iloc[0]
            if r["status"] != "ok":
                row[f"{space} top-1"] = r["status"]
                row[f"{space} MMACs"] = row[f"{space} latency"] = "–"
                continue
            top1 = f"{r['val_top1']:.1f}%"
            if _near_chance(r, folder):
                top1 += " ‡"
                notes.add("‡ the supernet's inherited weights classify at chance level: the "
                          "warm-up did not train this space's supernet (with random paths it "
                          "needs far more steps than the embedded data gives), so the accuracy "
                          "term carried no signal and only latency steered the search; compare "
                          "the retrained top-1")
            if retrained and pd.notna(r.get("retrain_top1")):
                top1 += f" / {r['retrain_top1']:.1f}%"
            row[f"{space} top-1"] = top1
            row[f"{space} MMACs"] = f"{r['macs_M']:.0f}"
            latency = ms(r["predicted_ms"]) + ("" if r["within_budget"] else " OVER")
            if not r["budget_binds"]:
                latency += " †"
                notes.add("† the budget does not bind for this space: even its largest child "
                          "fits, so only accuracy steered the search")
            row[f"{space} latency"] = latency
        rows.append(row)
    md += ["## Results: each space at the same budget", "",
           "top-1" + (" (inherited / retrained)" if retrained else " (inherited weights)")
           + ", MACs of the deployment network, predicted latency on the target device.", "",
           *md_table(pd.DataFrame(rows)).splitlines(), ""]
    md += [f"- {note}" for note in sorted(notes)] + ([""] if notes else [])
    over = ok[~ok["within_budget"].astype(bool)]
    md += [("Every chosen architecture is within its budget." if not len(over) else
            f"**{len(over)} architecture(s) exceed their budget** (see below)."), ""]

    # the long table: every run, latency on every target device
    long_rows = []
    for _, r in results.iterrows():
        row = {"space": r["space"], "device": r["device"], "budget": ms(r["budget_ms"]),
               "status": r["status"]}
        if r["status"] == "ok":
            row.update({"depths": r["depths"], "top-1": f"{r['val_top1']:.1f}%",
                        "params (M)": f"{r['params_M']:.2f}", "MMACs": f"{r['macs_M']:.0f}"})
            if retrained:
                row["retrained top-1"] = (f"{r['retrain_top1']:.1f}%"
                                          if pd.notna(r.get("retrain_top1")) else "–")
            for device in devices:
                row[f"{device} (ms)"] = ms(r.get(f"ms_{device}"))
            row["within"] = "yes" if r["within_budget"] else "NO"
            row["search (min)"] = f"{r['search_seconds'] / 60:.1f}"
            run = Path(r["best_json"]).parent
            row["run"] = f"[report]({(run / REPORT).as_posix()})"
        long_rows.append(row)
    md += ["## Every run", "",
           "Latency of each chosen child predicted on every target device "
           "(children range per space and device in `results.csv`).", "",
           *md_table(pd.DataFrame(long_rows)).splitlines(), ""]

    # plots
    made = []
    runs = {}
    for _, r in ok.iterrows():
        run = folder / Path(r["best_json"]).parent
        best = load_best(folder / r["best_json"])
        runs[(r["space"], r["device"], r["budget_ms"])] = {
            "row": r, "folder": run, "best": best,
            "log": read_csv(run / "search_log.csv"),
            "history": read_json(run / "alpha_history.json")}
        search_run_report(run)
    panels = []
    for device in devices:
        points, budgets = [], [b for d, b in targets if d == device]
        for (space, target, budget), run in runs.items():
            value = run["row"].get(f"ms_{device}")
            if value is None or not math.isfinite(float(value)):
                continue
            mine = target == device
            points.append({"x": float(value), "y": float(run["row"]["val_top1"]),
                           "group": space, "final": True, "target": mine,
                           "label": f"{budget:g} ms" if mine else ""})
            log = run["log"]
            if mine and log is not None and "argmax_ms" in log:
                searched = log[log["phase"] == "search"] if "phase" in log else log
                for e in searched.itertuples():
                    points.append({"x": float(e.argmax_ms), "y": float(e.val_top1_argmax),
                                   "group": space, "final": False})
        panels.append({"title": device, "budgets": budgets, "points": points,
                       "xlabel": f"predicted latency on {device} (ms)"})
    if panels:
        made.append(plots.plot_latency_accuracy(panels, folder / "latency_accuracy.png"))
    curve_panels = []
    for device, budget in targets:
        members = [(space, run["log"]) for (space, d, b), run in runs.items()
                   if d == device and b == budget and run["log"] is not None]
        if members:
            curve_panels.append({"title": f"{device} ≤ {budget:g} ms", "budget": budget,
                                 "runs": members})
    if curve_panels:
        made.append(plots.plot_search_curves_grid(curve_panels, folder / "search_curves.png"))
    if runs:
        items = [(f"{space} · {device} ≤ {budget:g} ms", run["best"].space, run["best"].ops)
                 for (space, device, budget), run in runs.items()]
        made.append(plots.plot_architectures(
            items, folder / "architectures.png",
            title="chosen architectures, stage by stage (empty dashed boxes: identity/zero)"))
        alpha_items = [(f"{space}\n{device} ≤ {budget:g} ms", run["history"], run["best"].ops)
                       for (space, device, budget), run in runs.items()
                       if run["history"] is not None and run["history"].get("probs")]
        if alpha_items:
            made.append(plots.plot_alpha_grid(alpha_items, folder / "alpha.png"))
    captions = {
        "latency_accuracy.png": "Latency vs accuracy per device: large markers are the chosen "
                                "children (filled: searched for this device; hollow: searched "
                                "for another device, predicted here), small dots the arg-max "
                                "child after each search epoch; black: the Pareto front; red: "
                                "budgets.",
        "search_curves.png": "E[LAT] (solid) and the arg-max child's latency (dotted) per search "
                             "epoch with the budget (red), and the arg-max child's validation "
                             "top-1.",
        "architectures.png": "The chosen architectures stage by stage.",
        "alpha.png": "softmax(α) per layer × candidate after the last epoch (red boxes: the "
                     "chosen op).",
    }
    md += ["## Plots", ""]
    for path in made:
        md += [f"![{path.stem}]({path.name})", "", captions.get(path.name, ""), ""]
    md += ["## Chosen architectures", ""]
    for (space, device, budget), run in runs.items():
        md.append(f"- **{space} · {device} ≤ {budget:g} ms:** {run['row']['ops_by_stage']}")
    md += ["", "## Files", "",
           f"- `{RESULTS}`: one row per (space, device, budget) with every column above and "
           "the latency on every known device (`ms_<device>`)",
           "- `<space>/warmup/`: each space's shared warm-up; `<space>/<device>-<budget>/`: each "
           "search (best.json, search_log.csv, alpha_history.json, report.md with its own "
           "plots)",
           "- `experiment.yaml`: the experiment file as run; `experiment.json`: provenance", ""]
    return write_text_atomic(folder / REPORT, "\n".join(md) + "\n")


def _near_chance(row, folder: Path) -> bool:
    """Whether a run's inherited top-1 is within 1.5× of guessing (100 / classes)."""
    try:
        path = Path(row["best_json"])
        best = json.loads((path if path.is_absolute() else folder / path).read_text())
        classes = int(best["evaluation"]["num_classes"])
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return float(row["val_top1"]) < 150.0 / classes


def _input_shape(ok: pd.DataFrame, folder: Path) -> list:
    for _, r in ok.iterrows():
        best = read_json(folder / r["best_json"])
        if best:
            return best["input_shape"]
    return ["?"]



def blocks_report(folder: Path, manifest: dict) -> Path:
    from ..bench import blocks

    table = read_csv(folder / BLOCKS_CSV)
    if table is None:
        raise QnasError(f"{folder / BLOCKS_CSV} is missing: the benchmark has not finished")
    first = table.iloc[0]
    md = [f"# {manifest['name']}: {manifest.get('description') or 'block benchmark'}", "",
          *provenance_md(manifest), "",
          f"Stacks of {first['layers']} blocks, batch {first['batch']}, "
          f"{first['resolution']}×{first['resolution']} maps, {first['device']}, "
          f"{first['threads']} threads; ratios are × QuadraBlock's at the same width.", "",
          f"- MACs: {first['macs_counter']}", f"- saved: {first['saved_rule']}",
          f"- peak: {first['peak_method']}"]
    if "train_img_s_low" in table.columns:
        md += ["- throughput: median over the timed rounds; the error bars of the throughput "
               "plot span their interquartile range (columns `*_img_s_low`/`*_img_s_high` of "
               f"`{BLOCKS_CSV}`)"]
    md += [""]
    view = blocks.format_block_table(table)
    md += ["## Blocks", "", *md_table(view, {c: ".3g" for c in view.columns
                                             if c not in ("kind", "C")}).splitlines(), ""]
    goals = blocks.goal_summary(table)
    if goals:
        md += ["Goals (issue: QuadraBlock ≤ 0.7× HorBlock's saved bytes, ≥ 1.3× its training "
               "speed):", "", *[f"- {line}" for line in goals], ""]
    made = [
        plots.plot_grouped_bars(table, "kind", [("saved_bytes", "saved for backward (MiB)",
                                                 2**20),
                                                ("peak_bytes", "peak step memory (MiB)", 2**20)],
                                folder / "blocks_memory.png", title="training memory"),
        plots.plot_grouped_bars(table, "kind", [("train_img_s", "training (img/s)", 1),
                                                ("infer_img_s", "inference (img/s)", 1)],
                                folder / "blocks_throughput.png", title="throughput"),
        plots.plot_grouped_bars(table, "kind", [("params", "parameters (M)", 1e6),
                                                ("macs_per_image", "GMACs per image", 1e9)],
                                folder / "blocks_cost.png", title="parameters and MACs"),
    ]
    conv = read_csv(blocks.companion_path(folder / BLOCKS_CSV))
    if conv is not None:
        view = blocks.format_quadraconv_table(conv)
        md += ["## QuadraConv2d vs three depthwise convolutions", "",
               *md_table(view, {c: ".3g" for c in view.columns
                                if c not in ("impl", "C")}).splitlines(), ""]
        made.append(plots.plot_grouped_bars(conv, "impl", [("fwd_bwd_ms", "forward+backward (ms)",
                                                            1),
                                                           ("saved_bytes", "saved (MiB)", 2**20)],
                                            folder / "quadraconv.png",
                                            title="one QuadraConv layer"))
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})\n" for p in made]
    md += ["## Files", "", f"- `{BLOCKS_CSV}`, `{blocks.companion_path(Path(BLOCKS_CSV)).name}`: "
           "the raw tables", "- `experiment.yaml`, `experiment.json`: settings and provenance", ""]
    return write_text_atomic(folder / REPORT, "\n".join(md) + "\n")



def ablation_report(folder: Path, manifest: dict) -> Path:
    config = manifest["config"]
    results = read_csv(folder / RESULTS)
    if results is None or not len(results):
        raise QnasError(f"{folder / RESULTS} is missing or empty: no kernel size has finished")
    devices = [c[3:] for c in results.columns if c.startswith("ms_")]
    train = config.get("train", {})
    md = [f"# {manifest['name']}: {manifest.get('description') or 'kernel-size ablation'}", "",
          *provenance_md(manifest), "",
          "## Settings", "",
          f"- QuadraNet C={config.get('width')}, depths {config.get('depths')}, every block a "
          f"QuadraBlock k×k, expansion {config.get('expansion', 4)}; kernels "
          f"{config.get('kernels')}",
          f"- trained from scratch with `qnas retrain`'s recipe: {train.get('epochs', '(default)')}"
          f" epochs on `{config.get('data', 'digits')}` at {config.get('resolution', 32)} px; "
          f"seeds {sorted(set(results['seed']))}",
          "- top-1: validation split after the last epoch (mean ± std over seeds); params, MACs "
          "and predicted latency: the deployment network at "
          f"{'×'.join(map(str, config.get('input_shape', [1, 3, 224, 224])))}, 1000 classes", ""]
    grouped = results.groupby("kernel", sort=True)
    rows = []
    for kernel, part in grouped:
        top1 = part["top1"]
        row = {"k": int(kernel), "params (M)": f"{part['params_M'].iloc[0]:.3f}",
               "MMACs": f"{part['macs_M'].iloc[0]:.0f}",
               "top-1": (f"{top1.mean():.2f}% ± {top1.std():.2f}" if len(top1) > 1
                         else f"{top1.iloc[0]:.2f}%"),
               "seeds": len(part)}
        for device in devices:
            row[f"{device} (ms)"] = ms(part[f"ms_{device}"].iloc[0])
        row["train (min)"] = f"{part['train_seconds'].mean() / 60:.1f}"
        rows.append(row)
    md += ["## Results", "", *md_table(pd.DataFrame(rows)).splitlines(), ""]
    made = [
        plots.plot_kernel_metric(results, [("top1", "val top-1 (%), last epoch")],
                                 folder / "kernel_accuracy.png", title="accuracy vs kernel size"),
        plots.plot_kernel_metric(results, [("params_M", "parameters (M)"),
                                           ("macs_M", "MMACs (deployment shape)")],
                                 folder / "kernel_cost.png", title="cost vs kernel size"),
        plots.plot_kernel_metric(results, [(f"ms_{d}", f"{d} (ms)") for d in devices],
                                 folder / "kernel_latency.png",
                                 title="predicted latency vs kernel size"),
    ]
    curves = []
    for _, r in results.iterrows():
        log = read_csv(folder / r["run"] / "retrain" / "retrain_log.csv")
        if log is not None:
            curves.append((f"k={r['kernel']} seed {r['seed']}", log))
    if curves:
        made.append(plots.plot_training_curves(curves, folder / "kernel_curves.png",
                                               title="training per kernel size"))
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})\n" for p in made]
    md += ["## Files", "", f"- `{RESULTS}`: one row per (kernel, seed)",
           "- `runs/k<k>-s<seed>/`: space.yaml, best.json (the fixed architecture) and "
           "retrain/ (retrain_log.csv, retrain.json; checkpoints)",
           "- `experiment.yaml`, `experiment.json`: settings and provenance", ""]
    return write_text_atomic(folder / REPORT, "\n".join(md) + "\n")
