"""Reports of search runs: one run folder (α per layer over the epochs, E[LAT] and accuracy per
epoch with the budget, the chosen architecture, the arg-max children's latency–accuracy front),
and a Pareto search folder (one child per budget, the front)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import QnasError
from ..models.ops import without_identity
from ..nas.best import recorded_space
from ..runtime.files import write_text_atomic
from ..space import load_space
from . import plots
from .markdown import md_table, ms, provenance_md, short
from .results import PARETO_CSV, PARETO_JSON, PARETO_PNG, REPORT, read_csv, read_json


def _space_of(best: dict | None, config: dict | None):
    """The search space of a run (from best.json, else config.json); None if not loadable."""
    try:
        if best is not None:
            return recorded_space(best["space"], Path("best.json"))
        if config is not None:
            return load_space(config["space"])
    except (QnasError, KeyError, TypeError):
        return None
    return None


def search_run_report(folder: str | Path, heading: str | None = None) -> Path:
    """report.md + plots of one search (or warm-up-only) run folder."""
    folder = Path(folder)
    config = read_json(folder / "config.json")
    best = read_json(folder / "best.json")
    history = read_json(folder / "alpha_history.json")
    log = read_csv(folder / "search_log.csv")
    space = _space_of(best, config)
    is_search = best is not None or (config or {}).get("device") is not None
    if heading is None:
        if best is not None:
            heading = (f"Search: {best['space']['name']} on {best['device']} within "
                       f"{ms(best['target_latency_ms'])}")
        elif config is not None and config.get("device"):
            heading = (f"Search (unfinished): {config.get('space')} on {config['device']} within "
                       f"{ms(config.get('latency'))}")
        else:
            heading = f"Supernet warm-up: {(config or {}).get('space', folder.name)}"
    md = [f"# {heading}", "", f"Run folder: `{folder}`", ""]
    made = []
    for warning in (best or {}).get("warnings") or []:
        md += [f"> **Warning:** {warning}", ""]

    if best is not None:
        within = bool(best.get("within_budget", True))
        search = best.get("search", {})
        evaluation = best.get("evaluation", {})
        facts = [
            ("space", f"{best['space']['name']} (hash {best['space']['hash']})"),
            ("device", f"{best['device']} [{best['predictor'].get('source')} "
                       f"{best['predictor'].get('version')}]"),
            ("budget", ms(best["target_latency_ms"])),
            ("predicted latency", f"{ms(best['predicted_latency_ms'])} (table sum "
                                  f"{ms(best.get('lut_latency_ms'))}) — "
                                  f"{'within budget' if within else 'OVER BUDGET'}"),
            ("validation top-1", f"{best['val_top1']:.2f}% ({evaluation.get('weights', 'inherited weights')}, "
                                 f"{evaluation.get('dataset', '?')} at "
                                 f"{evaluation.get('resolution', '?')} px)"),
            ("derivation", f"{best.get('derivation', {}).get('method', '?')}; children range "
                           f"{ms(best.get('derivation', {}).get('smallest_ms'))} – "
                           f"{ms(best.get('derivation', {}).get('largest_ms'))}"),
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
            rows.append({"stage": s, "width": plots.stage_width(space, s),
                         "blocks": f"{len(kept)} of {len(stage)}", "ops": " ".join(stage)})
        md += md_table(pd.DataFrame(rows)).splitlines() + [""]

    if best is not None:
        rows = [{"device": best["device"], "latency": ms(best["predicted_latency_ms"]),
                 "source": f"{best['predictor'].get('source')} {best['predictor'].get('version')}",
                 "known error": short(best["predictor"].get("known_error"))}]
        for device, value in best.get("other_devices", {}).items():
            if "latency_ms" in value:
                rows.append({"device": device, "latency": ms(value["latency_ms"]),
                             "source": f"{value.get('source')} {value.get('version')}",
                             "known error": short(value.get("known_error"))})
            else:
                rows.append({"device": device, "latency": "error",
                             "source": short(value.get("error")), "known error": ""})
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


def plot_pareto_folder(folder: str | Path) -> Path:
    """``pareto.png`` of a Pareto search folder: each budget's child (predicted latency, top-1)
    and the arg-max children per epoch, the front highlighted, the budgets as lines."""
    folder = Path(folder)
    frame = pd.read_csv(folder / PARETO_CSV)
    points, device = [], None
    for _, r in frame.iterrows():
        best = read_json(folder / r["best_json"])
        device = device or (best or {}).get("device")
        points.append({"x": float(r["predicted_ms"]), "y": float(r["val_top1"]),
                       "group": "derived child per budget", "final": True,
                       "label": f"≤ {r['budget_ms']:g} ms"})
        log = read_csv(folder / Path(r["best_json"]).parent / "search_log.csv")
        if log is not None and "argmax_ms" in log:
            for e in log.itertuples():
                if getattr(e, "phase", "search") == "search":
                    points.append({"x": float(e.argmax_ms), "y": float(e.val_top1_argmax),
                                   "group": "arg-max child per epoch", "final": False})
    return plots.plot_latency_accuracy(
        [{"title": f"Pareto search on {device}", "budgets": list(frame["budget_ms"]),
          "points": points, "xlabel": f"predicted latency on {device} (ms)"}],
        folder / PARETO_PNG)


def pareto_report(folder: Path) -> Path:
    manifest = read_json(folder / PARETO_JSON) or {}
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
        "budget": frame["budget_ms"].map(ms), "predicted": frame["predicted_ms"].map(ms),
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
