"""The reports' plots (matplotlib, Agg only: figures are drawn without pyplot or a display).

Each function draws one PNG and returns its path. Written atomically.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..models.ops import IDENTITY, kernel_and_expansion, parse_op
from ..runtime.files import write_bytes_atomic
from ..units import parse_latency
from .results import pareto_front

_KERNEL_COLOURS = {1: "#8C8C8C", 3: "#4C72B0", 5: "#55A868", 7: "#C44E52", 9: "#8172B2",
                   11: "#CCB974", 13: "#64B5CD"}
_SERIES = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B2", "#937860", "#DA8BC3",
           "#8C8C8C", "#CCB974", "#64B5CD"]
_MARKERS = ["o", "s", "^", "D", "v", "P"]


def _figure(width: float, height: float):
    # a Figure on an Agg canvas: no pyplot, no global backend switch, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically; returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    return write_bytes_atomic(path, data)


# --- ops -----------------------------------------------------------------------------------------

def op_parts(op: str) -> tuple[str, int | None, float | None]:
    """(kind, kernel, expansion) of an op name; kind ``identity`` for identity/zero."""
    try:
        kind, _ = parse_op(op)
    except ValueError:
        return "other", None, None
    return (kind, *kernel_and_expansion(op))


def op_style(op: str, expansions: Sequence[float] = ()) -> dict:
    """Face colour by kernel size, opacity by expansion (higher = darker), hatch for
    non-QuadraBlock kinds; identity → empty dashed box."""
    kind, kernel, expansion = op_parts(op)
    if kind == IDENTITY:
        return {"facecolor": "white", "edgecolor": "#999999", "linestyle": "--", "alpha": 1.0,
                "hatch": None}
    colour = _KERNEL_COLOURS.get(kernel, "#937860")
    alpha = 1.0
    values = sorted(set(float(e) for e in expansions if e is not None))
    if expansion is not None and len(values) > 1:
        rank = values.index(float(expansion)) if float(expansion) in values else len(values) - 1
        alpha = 0.4 + 0.6 * rank / (len(values) - 1)
    hatch = None if kind in ("quadra", "mbconv") else ("//" if kind == "quadra-kw" else "..")
    return {"facecolor": colour, "edgecolor": "black", "linestyle": "-", "alpha": alpha,
            "hatch": hatch}


# --- search runs ---------------------------------------------------------------------------------

def plot_alpha(history: dict, path: str | Path, chosen: Sequence[str] | None = None,
               title: str = "") -> Path:
    """Left: softmax(α) per layer × candidate after the last epoch (not-allowed cells grey,
    the chosen op boxed). Right: probability of the chosen op per layer over the epochs
    (warm-up epochs, if any, left of the dashed line)."""
    probs = np.asarray(history["probs"], dtype=float)           # epochs × layers × candidates
    candidates, layers = history["candidates"], history["layers"]
    allowed = np.asarray(history.get("allowed", np.ones(probs.shape[1:], bool)), dtype=bool)
    final = np.where(allowed, probs[-1], np.nan)
    index = {op: k for k, op in enumerate(candidates)}
    if chosen is None:
        chosen_k = np.nanargmax(final, axis=1)
    else:
        chosen_k = np.array([index[op] for op in chosen])
    over_time = probs[:, np.arange(len(layers)), chosen_k].T      # layers × epochs
    n_layers, n_epochs = len(layers), probs.shape[0]
    height = max(3.0, 0.14 * n_layers + 1.6)
    fig = _figure(4.0 + 0.8 * len(candidates) * 0.5 + max(3.0, 0.22 * n_epochs), height)
    left, right = fig.subplots(1, 2, width_ratios=[max(2.0, 0.5 * len(candidates)),
                                                   max(3.0, 0.22 * n_epochs)])
    cmap = _cmap("viridis")
    image = left.imshow(final, aspect="auto", cmap=cmap, vmin=0, vmax=1,
                        interpolation="nearest")
    left.set_facecolor("#DDDDDD")
    for row, k in enumerate(chosen_k):
        left.add_patch(_rect(k - 0.5, row - 0.5, 1, 1, fill=False, edgecolor="red", lw=1.2))
    left.set_xticks(range(len(candidates)), candidates, rotation=60, fontsize=7)
    _layer_ticks(left, layers)
    left.set_title(f"softmax(α) after epoch {history['epochs'][-1]}", fontsize=9)
    if not allowed.all():
        left.set_xlabel("grey: not allowed in that layer; red box: the chosen op", fontsize=7)
    else:
        left.set_xlabel("red box: the chosen op", fontsize=7)
    right.imshow(over_time, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    epochs = history["epochs"]
    step = max(1, n_epochs // 12)
    right.set_xticks(range(0, n_epochs, step), [str(e) for e in epochs[::step]], fontsize=7)
    right.set_xlabel("epoch", fontsize=8)
    phases = history.get("phases") or []
    warm = sum(1 for p in phases if p == "warmup")
    if 0 < warm < n_epochs:
        right.axvline(warm - 0.5, color="white", ls="--", lw=1)
    _layer_ticks(right, layers, labels=False)
    right.set_title("p(chosen op) per epoch", fontsize=9)
    fig.colorbar(image, ax=[left, right], shrink=0.6, label="probability")
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def plot_alpha_grid(items: Sequence[tuple[str, dict, Sequence[str] | None]],
                    path: str | Path) -> Path:
    """One final-epoch softmax(α) heatmap per run, side by side (chosen ops boxed)."""
    n = len(items)
    tallest = max(len(h["layers"]) for _, h, _ in items)
    fig = _figure(max(4.0, 2.3 * n + 1), max(3.5, 0.12 * tallest + 2.2))
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    cmap = _cmap("viridis")
    image = None
    for ax, (label, history, chosen) in zip(axes, items):
        probs = np.asarray(history["probs"], dtype=float)
        allowed = np.asarray(history.get("allowed", np.ones(probs.shape[1:], bool)), dtype=bool)
        final = np.where(allowed, probs[-1], np.nan)
        image = ax.imshow(final, aspect="auto", cmap=cmap, vmin=0, vmax=1,
                          interpolation="nearest")
        ax.set_facecolor("#DDDDDD")
        index = {op: k for k, op in enumerate(history["candidates"])}
        ks = (np.nanargmax(final, axis=1) if chosen is None
              else [index[op] for op in chosen])
        for row, k in enumerate(ks):
            ax.add_patch(_rect(k - 0.5, row - 0.5, 1, 1, fill=False, edgecolor="red", lw=0.8))
        ax.set_xticks(range(len(history["candidates"])), history["candidates"], rotation=70,
                      fontsize=6)
        _layer_ticks(ax, history["layers"])
        ax.set_title(label, fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.5, label="softmax(α), last epoch")
    return save(fig, path)


def plot_search_curves(log: pd.DataFrame, path: str | Path, budget: float | None = None,
                       smallest: float | None = None, largest: float | None = None,
                       title: str = "") -> Path:
    """Top: E[LAT] and the arg-max child's latency per epoch, with the budget. Bottom:
    validation top-1 of the arg-max child and training top-1 per epoch."""
    fig = _figure(7.0, 5.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    epochs = log["epoch"]
    if "expected_ms" in log:
        top.plot(epochs, log["expected_ms"], "-o", ms=3, label="E[LAT]", color=_SERIES[0])
        top.plot(epochs, log["argmax_ms"], "--s", ms=3, label="arg-max child",
                 color=_SERIES[1])
    if budget is not None:
        top.axhline(budget, color="red", lw=1, label=f"budget {budget:g} ms")
    for value, name in ((smallest, "smallest child"), (largest, "largest child")):
        if value is not None and math.isfinite(value):
            top.axhline(value, color="grey", lw=0.8, ls=":", label=name)
    top.set_ylabel("latency (ms)")
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=7, loc="best")
    else:
        top.text(0.5, 0.5, "no latency target (warm-up only)", ha="center", va="center",
                 transform=top.transAxes, fontsize=8, color="#777777")
    bottom.plot(epochs, log["val_top1_argmax"], "-o", ms=3, color=_SERIES[2],
                label="val top-1 (arg-max child)")
    bottom.plot(epochs, log["train_top1"], "--", color=_SERIES[3], label="train top-1 (sampled)")
    bottom.set_ylabel("top-1 (%)")
    bottom.set_xlabel("epoch")
    bottom.legend(fontsize=7, loc="best")
    _shade_warmup(log, (top, bottom))
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def plot_search_curves_grid(panels: Sequence[dict], path: str | Path) -> Path:
    """Experiment version: one column per target (device, budget); each run of that target
    (one per space) as a line. ``panels``: [{title, budget, runs: [(label, log)]}]."""
    n = len(panels)
    fig = _figure(max(4.5, 3.6 * n), 6.0)
    axes = fig.subplots(2, n, squeeze=False, sharex="col")
    for col, panel in enumerate(panels):
        top, bottom = axes[0][col], axes[1][col]
        for i, (label, log) in enumerate(panel["runs"]):
            colour = _SERIES[i % len(_SERIES)]
            if "expected_ms" in log:
                top.plot(log["epoch"], log["expected_ms"], "-o", ms=2.5, color=colour,
                         label=f"{label} E[LAT]")
                top.plot(log["epoch"], log["argmax_ms"], ":", color=colour,
                         label=f"{label} arg-max")
            bottom.plot(log["epoch"], log["val_top1_argmax"], "-o", ms=2.5, color=colour,
                        label=label)
        top.axhline(panel["budget"], color="red", lw=1, label="budget")
        top.set_title(panel["title"], fontsize=9)
        bottom.set_xlabel("search epoch")
        if col == 0:
            top.set_ylabel("latency (ms)")
            bottom.set_ylabel("val top-1 (%), arg-max child")
        top.legend(fontsize=6, loc="best")
        bottom.legend(fontsize=6, loc="best")
    return save(fig, path)


def plot_architectures(items: Sequence[tuple[str, object, Sequence[str]]],
                       path: str | Path, title: str = "") -> Path:
    """Each architecture as one row of boxes, stage by stage (stages separated by a gap and
    labelled with their width); boxes coloured by kernel, shaded by expansion; identity layers
    are empty dashed boxes, so removed layers stay visible. ``items``: (label, space, ops)."""
    from matplotlib.patches import Patch

    rows = []
    expansions = set()
    seen_ops: dict[str, None] = {}
    for label, space, ops in items:
        stages = space.stage_ops(ops)
        rows.append((label, space, stages))
        for op in space.candidates:
            expansions.add(op_parts(op)[2])
        for stage in stages:
            for op in stage:
                seen_ops.setdefault(op, None)
    gap = 1.0
    widths = [sum(len(s) for s in stages) + gap * (len(stages) - 1) for _, _, stages in rows]
    total = max(widths)
    fig = _figure(min(26.0, max(6.0, 0.2 * total + 3.0)), 0.75 * len(rows) + 1.6)
    ax = fig.subplots()
    expansions.discard(None)
    for r, (label, space, stages) in enumerate(rows):
        y = -r
        x = 0.0
        for s, stage in enumerate(stages):
            start = x
            for op in stage:
                style = op_style(op, expansions)
                ax.add_patch(_rect(x + 0.05, y - 0.35, 0.9, 0.7, fill=True,
                                   facecolor=style["facecolor"], alpha=style["alpha"],
                                   edgecolor=style["edgecolor"], linestyle=style["linestyle"],
                                   hatch=style["hatch"], lw=0.6))
                x += 1.0
            ax.text((start + x) / 2, y - 0.48, f"s{s}·{stage_width(space, s)}", ha="center",
                    va="top", fontsize=6, color="#444444")
            x += gap
    # row labels as y tick labels: the constrained layout makes room for them
    ax.set_yticks([-r for r in range(len(rows))], [label for label, _, _ in rows], fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlim(-0.2, total + 0.2)
    ax.set_ylim(-len(rows) + 0.3, 0.6)
    handles = [Patch(facecolor=op_style(op, expansions)["facecolor"],
                     alpha=op_style(op, expansions)["alpha"],
                     edgecolor=op_style(op, expansions)["edgecolor"],
                     linestyle=op_style(op, expansions)["linestyle"],
                     hatch=op_style(op, expansions)["hatch"], label=op)
               for op in sorted(seen_ops, key=_op_order)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02),
              ncol=min(8, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def plot_latency_accuracy(panels: Sequence[dict], path: str | Path) -> Path:
    """Latency–accuracy scatter with the Pareto front, one panel per device.

    ``panels``: [{title, xlabel, budgets: [ms], points: [{x, y, label, group, final, target}]}]
    — ``final`` points (derived children) are large markers, the others (arg-max children per
    epoch) small and faded; ``group`` picks colour and marker (e.g. the space); ``target``
    False draws a final point hollow (it was searched for another device). The front is taken
    over every point of the panel."""
    n = len(panels)
    fig = _figure(max(5.0, 4.6 * n), 4.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        points = [p for p in panel["points"]
                  if math.isfinite(p["x"]) and math.isfinite(p["y"])]
        groups = list(dict.fromkeys(p["group"] for p in points))
        labelled: dict[tuple, int] = {}     # stagger labels of points that coincide
        for g, group in enumerate(groups):
            colour, marker = _SERIES[g % len(_SERIES)], _MARKERS[g % len(_MARKERS)]
            small = [p for p in points if p["group"] == group and not p["final"]]
            if small:
                ax.scatter([p["x"] for p in small], [p["y"] for p in small], s=10,
                           color=colour, alpha=0.3, marker=marker, linewidths=0)
            big = [p for p in points if p["group"] == group and p["final"]]
            for p in big:
                filled = p.get("target", True)
                ax.scatter([p["x"]], [p["y"]], s=70, marker=marker,
                           facecolors=colour if filled else "none", edgecolors=colour,
                           linewidths=1.3, zorder=3)
                if p.get("label"):
                    key = (round(p["x"], 3), round(p["y"], 1))
                    shift = labelled.get(key, 0)
                    labelled[key] = shift + 1
                    ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points",
                                xytext=(4, 4 + 8 * shift), fontsize=6)
            ax.scatter([], [], s=50, marker=marker, color=colour, label=str(group))
        if points:
            front = pareto_front([p["x"] for p in points], [p["y"] for p in points])
            fx = [points[i]["x"] for i in front]
            fy = [points[i]["y"] for i in front]
            ax.step(fx, fy, where="post", color="black", lw=1.0, alpha=0.8,
                    label="Pareto front")
            ax.scatter(fx, fy, s=14, color="black", zorder=4)
            xs = [p["x"] for p in points]
            if min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
                # major ticks only, plainly written: minor labels overlap on narrow panels
                ax.xaxis.set_major_formatter(_plain_ticks())
                ax.xaxis.set_minor_formatter(_no_ticks())
            _fit_y_to_results(ax, points, fy)
        for budget in panel.get("budgets", []):
            ax.axvline(budget, color="red", lw=1, ls="--")
        if panel.get("budgets"):
            ax.plot([], [], color="red", lw=1, ls="--", label="budget")
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel(panel.get("xlabel", "predicted latency (ms)"), fontsize=8)
        ax.set_ylabel("val top-1 (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    # one legend for all panels, below them, where it hides no marker
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside lower center",
               ncol=min(6, len(labels)), frameon=False)
    return save(fig, path)


def _plain_ticks():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def _no_ticks():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _fit_y_to_results(ax, points: Sequence[dict], front_y: Sequence[float]) -> None:
    """The y range of the derived children and the front, with a margin — not 0–100, which
    flattens a spread of a point or two; faded per-epoch points below it are left out (the
    panel says how many)."""
    finals = [p["y"] for p in points if p["final"]] + list(front_y)
    if not finals:
        return
    low, high = min(finals), max(finals)
    margin = max(1.0, 0.15 * (high - low))
    bottom, top = max(0.0, low - margin), min(100.0, high + margin)
    ax.set_ylim(bottom, top)
    hidden = sum(1 for p in points if p["y"] < bottom)
    if hidden:
        ax.text(0.01, 0.01, f"{hidden} arg-max points below {bottom:.0f}% not shown",
                transform=ax.transAxes, fontsize=6, color="grey", va="bottom")


def plot_search_vs_random(children: pd.DataFrame, target: dict, path: str | Path,
                          scored_on: str = "val") -> Path:
    """Left: retrained top-1 (mean ± std over seeds) against table latency, per group, the
    budget as a line. Right: inherited (supernet) against retrained top-1 — the one-shot
    ranking."""
    fig = _figure(10.0, 4.0)
    left, right = fig.subplots(1, 2)
    styles = {"searched": (_SERIES[3], "*", 160), "most-probable": (_SERIES[1], "v", 60),
              "random": (_SERIES[0], "o", 40), "hand-designed": (_SERIES[2], "s", 70)}
    for group, (colour, marker, size) in styles.items():
        part = children[children["group"] == group]
        if not len(part):
            continue
        left.errorbar(part["latency_ms"], part["top1_mean"], yerr=part["top1_std"].fillna(0),
                      fmt="none", ecolor=colour, alpha=0.6, capsize=2)
        left.scatter(part["latency_ms"], part["top1_mean"], s=size, marker=marker,
                     color=colour, label=group, zorder=3)
        right.scatter(part["inherited_top1"], part["top1_mean"], s=size, marker=marker,
                      color=colour, label=group, zorder=3)
    left.axvline(parse_latency(target["latency"]), color="red", lw=1, ls="--", label="budget")
    left.set_xlabel(f"latency on {target.get('device')} (ms, table)", fontsize=8)
    left.set_ylabel(f"retrained {scored_on} top-1 (%)", fontsize=8)
    left.set_title("retrained: mean ± std over seeds", fontsize=9)
    right.set_xlabel("inherited val top-1 (%, supernet weights)", fontsize=8)
    right.set_ylabel(f"retrained {scored_on} top-1 (%)", fontsize=8)
    right.set_title("one-shot ranking: inherited vs retrained", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        ax.ticklabel_format(axis="y", useOffset=False)
    return save(fig, path)


# --- Table II --------------------------------------------------------------------------------------

def plot_grouped_bars(table: pd.DataFrame, key: str, columns: Sequence[tuple[str, str, float]],
                      path: str | Path, title: str = "") -> Path:
    """Grouped bars: one panel per (column, label, scale), x = ``key`` values, one bar per
    width (``channels``)."""
    widths = list(dict.fromkeys(table["channels"]))
    names = list(dict.fromkeys(table[key]))
    fig = _figure(max(6.0, 3.4 * len(columns)), 3.8)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    bar = 0.8 / max(1, len(widths))
    for ax, (column, label, scale) in zip(axes, columns):
        for i, width in enumerate(widths):
            part = table[table["channels"] == width].set_index(key).reindex(names)
            error = None
            if f"{column}_low" in part.columns and f"{column}_high" in part.columns:
                # interquartile range of the timed rounds
                error = np.vstack([(part[column] - part[f"{column}_low"]).clip(lower=0),
                                   (part[f"{column}_high"] - part[column]).clip(lower=0)]) / scale
            ax.bar(np.arange(len(names)) + (i - (len(widths) - 1) / 2) * bar,
                   part[column] / scale, bar, label=f"C={width}",
                   color=_SERIES[i % len(_SERIES)], yerr=error, capsize=2,
                   error_kw={"lw": 0.8})
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


# --- Table IV ---------------------------------------------------------------------------------------

def plot_kernel_metric(table: pd.DataFrame, columns: Sequence[tuple[str, str]], path: str | Path,
                       title: str = "", log_y: bool = False) -> Path:
    """Per kernel size: mean of each column over seeds (± std as error bars, every seed as a
    dot); one panel per (column, label)."""
    fig = _figure(max(4.5, 3.4 * len(columns)), 3.6)
    axes = fig.subplots(1, len(columns), squeeze=False)[0]
    grouped = table.groupby("kernel")
    for i, (ax, (column, label)) in enumerate(zip(axes, columns)):
        mean, std = grouped[column].mean(), grouped[column].std().fillna(0.0)
        colour = _SERIES[i % len(_SERIES)]
        ax.errorbar(mean.index, mean.values, yerr=std.values, fmt="-o", color=colour,
                    capsize=3)
        ax.scatter(table["kernel"], table[column], s=10, color=colour, alpha=0.4)
        ax.set_xticks(list(mean.index), [f"k={k}" for k in mean.index])
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        if log_y:
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def plot_training_curves(curves: Sequence[tuple[str, pd.DataFrame]], path: str | Path,
                         title: str = "") -> Path:
    """Validation top-1 and training loss per epoch, one line per run."""
    fig = _figure(9.0, 3.6)
    left, right = fig.subplots(1, 2)
    for i, (label, log) in enumerate(curves):
        colour = _SERIES[i % len(_SERIES)]
        left.plot(log["epoch"], log["val_top1"], "-o", ms=2.5, color=colour, label=label)
        right.plot(log["epoch"], log["train_loss"], "-", color=colour, label=label)
    left.set_xlabel("epoch")
    left.set_ylabel("val top-1 (%)")
    right.set_xlabel("epoch")
    right.set_ylabel("train loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


# --- helpers -----------------------------------------------------------------------------------------

def _cmap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="#DDDDDD")


def _rect(x, y, w, h, **kwargs):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, **kwargs)


def _layer_ticks(ax, layers: Sequence[str], labels: bool = True) -> None:
    n = len(layers)
    step = max(1, math.ceil(n / 40))
    ticks = list(range(0, n, step))
    ax.set_yticks(ticks, [layers[i] for i in ticks] if labels else [""] * len(ticks),
                  fontsize=6)


def _shade_warmup(log: pd.DataFrame, axes) -> None:
    if "phase" not in log:
        return
    warm = log[log["phase"] == "warmup"]["epoch"]
    if len(warm) and len(warm) < len(log):
        for ax in axes:
            ax.axvspan(warm.min() - 0.5, warm.max() + 0.5, color="grey", alpha=0.12, lw=0)
        axes[0].text(warm.min() - 0.4, axes[0].get_ylim()[1], "warm-up", fontsize=7,
                     va="top", color="#555555")


def stage_width(space, stage: int) -> int:
    if getattr(space, "macro", "quadranet") == "mbconv":
        return space.widths[stage]
    return space.width * 2 ** stage


def _op_order(op: str):
    kind, kernel, expansion = op_parts(op)
    return (kind == IDENTITY, kernel or 0, expansion or 0, op)
