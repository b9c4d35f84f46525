"""``report.md`` + PNG plots for a results folder.

:func:`write_report` recognises three kinds of folder:

* an experiment results folder (``experiment.json``, from :func:`run_experiment`): Table II
  (``blocks``), Table III (``nas``) or Table IV (``ablation``), with the command, qnas version,
  git commit, machine and wall time it was made with;
* a Pareto search folder (``pareto.json`` / ``pareto.csv``, from :func:`pareto_search`);
* a single search run folder (``search_log.csv``, ``alpha_history.json``, ``best.json``; also a
  warm-up-only ``qnas train-supernet`` folder).

Plots of a search run: α heatmaps (final softmax(α) per layer × candidate, and the chosen op's
probability per layer over the epochs), E[LAT] / arg-max latency / validation top-1 per epoch
with the budget, the chosen architecture stage by stage, and a latency–accuracy scatter of the
per-epoch arg-max children with the Pareto front.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import QnasError
from ..models.ops import without_identity
from ..runtime.files import write_text_atomic
from . import plots
from .pareto import PARETO_CSV, PARETO_JSON, PARETO_PNG, pareto_front
from .runner import BLOCKS_CSV, MANIFEST, RESULTS, read_manifest

REPORT = "report.md"
SEARCH_FILES = ("search_log.csv", "alpha_history.json", "best.json")


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` and its PNG plots; returns the report's path."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise QnasError(f"{folder} is not a folder; pass a run folder such as runs/<name> or an "
                        f"experiment results folder")
    if (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        kind = manifest.get("kind")
        if kind == "blocks":
            return _blocks_report(folder, manifest)
        if kind == "nas":
            return _nas_report(folder, manifest)
        if kind == "ablation":
            return _ablation_report(folder, manifest)
        raise QnasError(f"{folder / MANIFEST} has unknown kind {kind!r}")
    if (folder / PARETO_CSV).is_file():
        return _pareto_report(folder)
    if any((folder / name).is_file() for name in SEARCH_FILES):
        return search_run_report(folder)
    raise QnasError(f"{folder} holds no search run, Pareto search or experiment results "
                    f"(none of {MANIFEST}, {PARETO_CSV}, {', '.join(SEARCH_FILES)}); pass the "
                    f"folder 'qnas search' or 'qnas experiment run' wrote")


# --- markdown helpers ---------------------------------------------------------------------------

def _cell(value, fmt: str | Callable | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if callable(fmt):
        return fmt(value)
    if fmt is not None:
        return format(value, fmt)
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def md_table(frame: pd.DataFrame, formats: dict | None = None) -> str:
    """A GitHub markdown table of ``frame`` (``formats``: column → format spec or callable)."""
    formats = formats or {}
    columns = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], formats.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _short(text, limit: int = 90) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _ms(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    from ..units import format_ms

    return format_ms(float(value))


def provenance_md(manifest: dict) -> list[str]:
    """The 'how this was made' lines of a report."""
    from .provenance import describe_machine

    git = manifest.get("git")
    if git:
        commit = f"git {git['commit'][:12]}" + (" (with uncommitted changes to tracked files)"
                                                if git.get("dirty") else "")
    else:
        commit = "git commit unknown (not run from a git checkout)"
    wall = manifest.get("wall_seconds")
    lines = [f"- **Command:** `{manifest.get('command')}`",
             f"- **qnas:** {manifest.get('qnas_version')}, {commit}",
             f"- **Machine:** {describe_machine(manifest.get('machine') or {})}",
             f"- **Started:** {manifest.get('started')}; **wall time:** "
             + ((f"{wall / 60:.1f} min" if wall >= 120 else f"{wall:.0f} s")
                if isinstance(wall, (int, float)) else "–")
             + f"; **status:** {manifest.get('status')}"]
    if manifest.get("resumed_from"):
        lines.append(f"- **Resumed** a run started {manifest['resumed_from'].get('started')}")
    return lines


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


# --- one search run --------------------------------------------------------------------------------

def _space_of(best: dict | None, config: dict | None):
    """The search space of a run (from best.json, else config.json); None if not loadable."""
    from ..nas.best import _recorded_space
    from ..space import load_space

    try:
        if best is not None:
            return _recorded_space(best["space"], Path("best.json"))
        if config is not None:
            return load_space(config["space"])
    except (QnasError, KeyError, TypeError):
        return None
    return None


def search_run_report(folder: str | Path, heading: str | None = None) -> Path:
    """report.md + plots of one search (or warm-up-only) run folder."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    best = _read_json(folder / "best.json")
    history = _read_json(folder / "alpha_history.json")
    log = _read_csv(folder / "search_log.csv")
    space = _space_of(best, config)
    is_search = best is not None or (config or {}).get("device") is not None
    if heading is None:
        if best is not None:
            heading = (f"Search: {best['space']['name']} on {best['device']} within "
                       f"{_ms(best['target_latency_ms'])}")
        elif config is not None and config.get("device"):
            heading = (f"Search (unfinished): {config.get('space')} on {config['device']} within "
                       f"{_ms(config.get('latency'))}")
        else:
            heading = f"Supernet warm-up: {(config or {}).get('space', folder.name)}"
    md = [f"# {heading}", "", f"Run folder: `{folder}`", ""]
    made = []

    if best is not None:
        within = best.get("within_budget", True) and \
            best["predicted_latency_ms"] <= best["target_latency_ms"]
        search = best.get("search", {})
        evaluation = best.get("evaluation", {})
        facts = [
            ("space", f"{best['space']['name']} (hash {best['space']['hash']})"),
            ("device", f"{best['device']} [{best['predictor'].get('source')} "
                       f"{best['predictor'].get('version')}]"),
            ("budget", _ms(best["target_latency_ms"])),
            ("predicted latency", f"{_ms(best['predicted_latency_ms'])} (table sum "
                                  f"{_ms(best.get('lut_latency_ms'))}) — "
                                  f"{'within budget' if within else 'OVER BUDGET'}"),
            ("validation top-1", f"{best['val_top1']:.2f}% ({evaluation.get('weights', 'inherited weights')}, "
                                 f"{evaluation.get('dataset', '?')} at "
                                 f"{evaluation.get('resolution', '?')} px)"),
            ("derivation", f"{best.get('derivation', {}).get('method', '?')}; children range "
                           f"{_ms(best.get('derivation', {}).get('smallest_ms'))} – "
                           f"{_ms(best.get('derivation', {}).get('largest_ms'))}"),
            ("search", f"loss {search.get('loss')} (λ {search.get('lam')}, β {search.get('beta')}), "
                       f"warm-up {search.get('warmup_epochs')} + search {search.get('epochs')} "
                       f"epochs, batch {search.get('batch_size')}, data {search.get('data')}"
                       + (f", supernet {search.get('supernet')}" if search.get("supernet") else "")),
            ("seed / qnas", f"{best.get('seed')} / {best.get('qnas_version')}"),
        ]
        md += md_table(pd.DataFrame(facts, columns=["", "value"])).splitlines() + [""]
    elif config is not None:
        md += ["The run has not finished (no best.json)." if is_search
               else "A warm-up-only run (`qnas train-supernet`): no device, no α training.", ""]
        keep = {k: v for k, v in config.items() if k != "optim"}
        md += md_table(pd.DataFrame(list(keep.items()), columns=["setting", "value"])).splitlines()
        md.append("")

    if best is not None and space is not None:
        path = plots.plot_architectures([(best["device"], space, best["ops"])],
                                        folder / "architecture.png",
                                        title="chosen architecture (empty dashed boxes: identity)")
        made.append(path)
        md += ["## Architecture", "", f"![architecture]({path.name})", ""]
        rows = []
        for s, stage in enumerate(space.stage_ops(best["ops"])):
            kept = without_identity(stage)
            rows.append({"stage": s, "width": plots._stage_width(space, s),
                         "blocks": f"{len(kept)} of {len(stage)}", "ops": " ".join(stage)})
        md += md_table(pd.DataFrame(rows)).splitlines() + [""]

    if best is not None:
        rows = [{"device": best["device"], "latency": _ms(best["predicted_latency_ms"]),
                 "source": f"{best['predictor'].get('source')} {best['predictor'].get('version')}",
                 "known error": _short(best["predictor"].get("known_error"))}]
        for device, value in best.get("other_devices", {}).items():
            if "latency_ms" in value:
                rows.append({"device": device, "latency": _ms(value["latency_ms"]),
                             "source": f"{value.get('source')} {value.get('version')}",
                             "known error": _short(value.get("known_error"))})
            else:
                rows.append({"device": device, "latency": "error",
                             "source": _short(value.get("error")), "known error": ""})
        md += ["## Predicted latency of the child on every device", "",
               *md_table(pd.DataFrame(rows)).splitlines(), ""]

    if log is not None and len(log):
        budget = best["target_latency_ms"] if best else (config or {}).get("latency")
        derivation = (best or {}).get("derivation", {})
        path = plots.plot_search_curves(log, folder / "search_curves.png", budget=budget,
                                        smallest=derivation.get("smallest_ms"),
                                        largest=derivation.get("largest_ms"),
                                        title=heading)
        made.append(path)
        md += ["## Per epoch", "", f"![search curves]({path.name})", ""]
    if history is not None and history.get("probs"):
        chosen = best["ops"] if best is not None else None
        path = plots.plot_alpha(history, folder / "alpha.png", chosen=chosen,
                                title="architecture distribution (red boxes: the chosen op)")
        made.append(path)
        md += ["## Architecture parameters α", "", f"![alpha]({path.name})", ""]
    if log is not None and "argmax_ms" in log and best is not None:
        points = [{"x": float(r.argmax_ms), "y": float(r.val_top1_argmax), "group": "arg-max "
                   "child per epoch", "final": False} for r in log.itertuples()
                  if getattr(r, "phase", "search") == "search"]
        points.append({"x": float(best["predicted_latency_ms"]), "y": float(best["val_top1"]),
                       "group": "derived child", "final": True, "label": "derived"})
        path = plots.plot_latency_accuracy(
            [{"title": f"{best['device']}: latency vs accuracy", "budgets":
              [best["target_latency_ms"]], "points": points}], folder / "latency_accuracy.png")
        made.append(path)
        md += ["## Latency vs accuracy", "",
               "Arg-max children after each search epoch (validated with the supernet's shared "
               "weights) and the derived child; black: the Pareto front.", "",
               f"![latency vs accuracy]({path.name})", ""]
    if log is not None and len(log):
        columns = [c for c in ("epoch", "phase", "train_loss", "train_top1", "val_top1_argmax",
                               "expected_ms", "argmax_ms", "entropy", "seconds") if c in log]
        md += ["## Log", "", *md_table(log[columns], {
            "train_loss": ".3f", "train_top1": ".1f", "val_top1_argmax": ".1f",
            "expected_ms": ".4g", "argmax_ms": ".4g", "entropy": ".3f", "seconds": ".0f"
        }).splitlines(), ""]
    if best is not None and best.get("layers"):
        frame = pd.DataFrame(best["layers"])
        keep = [c for c in ("name", "op", "ms", "p") if c in frame]
        md += ["## Chosen op per layer", "", *md_table(frame[keep], {"ms": ".4g",
                                                                     "p": ".3f"}).splitlines(), ""]
    path = write_text_atomic(folder / REPORT, "\n".join(md) + "\n")
    return path


# --- Table III ----------------------------------------------------------------------------------------

def _nas_report(folder: Path, manifest: dict) -> Path:
    from ..nas.best import load_best

    config = manifest["config"]
    results = _read_csv(folder / RESULTS)
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
        row = {"device": device, "budget": _ms(budget)}
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
            latency = _ms(r["predicted_ms"]) + ("" if r["within_budget"] else " OVER")
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
        row = {"space": r["space"], "device": r["device"], "budget": _ms(r["budget_ms"]),
               "status": r["status"]}
        if r["status"] == "ok":
            row.update({"depths": r["depths"], "top-1": f"{r['val_top1']:.1f}%",
                        "params (M)": f"{r['params_M']:.2f}", "MMACs": f"{r['macs_M']:.0f}"})
            if retrained:
                row["retrained top-1"] = (f"{r['retrain_top1']:.1f}%"
                                          if pd.notna(r.get("retrain_top1")) else "–")
            for device in devices:
                row[f"{device} (ms)"] = _ms(r.get(f"ms_{device}"))
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
            "log": _read_csv(run / "search_log.csv"),
            "history": _read_json(run / "alpha_history.json")}
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
           "- `warmup/<space>/`: the shared warm-ups; `runs/<space>-<device>-<budget>/`: each "
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
        best = _read_json(folder / r["best_json"])
        if best:
            return best["input_shape"]
    return ["?"]


# --- Pareto search ------------------------------------------------------------------------------------

def plot_pareto_folder(folder: str | Path) -> Path:
    """``pareto.png`` of a Pareto search folder: each budget's child (predicted latency, top-1)
    and the arg-max children per epoch, the front highlighted, the budgets as lines."""
    folder = Path(folder)
    frame = pd.read_csv(folder / PARETO_CSV)
    points, device = [], None
    for _, r in frame.iterrows():
        best = _read_json(folder / r["best_json"])
        device = device or (best or {}).get("device")
        points.append({"x": float(r["predicted_ms"]), "y": float(r["val_top1"]),
                       "group": "derived child per budget", "final": True,
                       "label": f"≤ {r['budget_ms']:g} ms"})
        log = _read_csv(folder / Path(r["best_json"]).parent / "search_log.csv")
        if log is not None and "argmax_ms" in log:
            for e in log.itertuples():
                if getattr(e, "phase", "search") == "search":
                    points.append({"x": float(e.argmax_ms), "y": float(e.val_top1_argmax),
                                   "group": "arg-max child per epoch", "final": False})
    return plots.plot_latency_accuracy(
        [{"title": f"Pareto search on {device}", "budgets": list(frame["budget_ms"]),
          "points": points, "xlabel": f"predicted latency on {device} (ms)"}],
        folder / PARETO_PNG)


def _pareto_report(folder: Path) -> Path:
    manifest = _read_json(folder / PARETO_JSON) or {}
    frame = pd.read_csv(folder / PARETO_CSV)
    plot = plot_pareto_folder(folder)
    device = manifest.get("device", "?")
    md = [f"# Pareto search: {manifest.get('space', '?')} on {device}", ""]
    if manifest:
        md += provenance_md(manifest) + [""]
    ordered = frame.sort_values("budget_ms")["predicted_ms"].is_monotonic_increasing
    md += [f"One shared warm-up (`warmup/`), one search per budget. Predicted latencies are "
           f"{'ordered like the budgets' if ordered else 'NOT ordered like the budgets'}; every "
           f"child is {'within' if frame['within_budget'].all() else 'NOT within'} its budget.",
           ""]
    view = pd.DataFrame({
        "budget": frame["budget_ms"].map(_ms), "predicted": frame["predicted_ms"].map(_ms),
        "top-1 (inherited)": frame["val_top1"].map(lambda v: f"{v:.1f}%"),
        "MMACs": frame["macs_M"].map(lambda v: f"{v:.0f}"), "depths": frame["depths"],
        "within": frame["within_budget"].map(lambda v: "yes" if v else "NO"),
        "on front": frame["on_front"].map(lambda v: "yes" if v else ""),
        "run": [f"[report]({(Path(p).parent / REPORT).as_posix()})" for p in frame["best_json"]],
    })
    md += md_table(view).splitlines() + ["", f"![pareto]({plot.name})", ""]
    for path in frame["best_json"]:
        search_run_report(folder / Path(path).parent)
    return write_text_atomic(folder / REPORT, "\n".join(md) + "\n")


# --- Table II ------------------------------------------------------------------------------------------

def _blocks_report(folder: Path, manifest: dict) -> Path:
    from ..bench import blocks

    table = _read_csv(folder / BLOCKS_CSV)
    if table is None:
        raise QnasError(f"{folder / BLOCKS_CSV} is missing: the benchmark has not finished")
    first = table.iloc[0]
    md = [f"# {manifest['name']}: {manifest.get('description') or 'block benchmark'}", "",
          *provenance_md(manifest), "",
          f"Stacks of {first['layers']} blocks, batch {first['batch']}, "
          f"{first['resolution']}×{first['resolution']} maps, {first['device']}, "
          f"{first['threads']} threads; ratios are × QuadraBlock's at the same width.", "",
          f"- MACs: {first['macs_counter']}", f"- saved: {first['saved_rule']}",
          f"- peak: {first['peak_method']}", ""]
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
    conv = _read_csv(blocks.companion_path(folder / BLOCKS_CSV))
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


# --- Table IV ------------------------------------------------------------------------------------------

def _ablation_report(folder: Path, manifest: dict) -> Path:
    config = manifest["config"]
    results = _read_csv(folder / RESULTS)
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
            row[f"{device} (ms)"] = _ms(part[f"ms_{device}"].iloc[0])
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
        log = _read_csv(folder / r["run"] / "retrain" / "retrain_log.csv")
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


__all__ = ["write_report", "search_run_report", "plot_pareto_folder", "md_table",
           "provenance_md", "pareto_front", "REPORT"]
