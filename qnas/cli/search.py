"""``qnas search`` and ``qnas train-supernet``: parse, call, report. Their options come from
:class:`qnas.nas.config.SearchConfig`."""
from __future__ import annotations

import click

from ..nas.config import SearchConfig
from ..runtime.threads import TRAINING
from . import cli
from .options import config_options, format_option, resolve_config, run_options


@cli.command("search", epilog="""\b
Examples:
  qnas search --device cortexA76 --latency 300ms
  qnas search --device myriadvpu --latency 30ms --epochs 20 --out runs/vpu
  qnas search --device cortexA76 --latency 300ms,200ms,120ms     # one warm-up, three searches
  qnas search --config runs/vpu/config.json --out runs/vpu-again  # repeat a run
  qnas search --device cortexA76 --latency 300ms -q --format json > summary.json
\b
Writes best.json and child.pt (the child's inherited weights: all that export and
retrain need), search_log.csv, run.log, config.json and the newest supernet checkpoint
(--keep-checkpoints).""")
@config_options(SearchConfig, purpose=TRAINING)
@run_options
@format_option
def search_command(out, resume, stop_after, quiet, verbose, output_format, **options) -> None:
    """Search the best architecture within a latency budget on a device; writes best.json."""
    config = resolve_config(SearchConfig, options)
    from ..runtime.distributed import is_main
    from ..runtime.log import console_echo, progress_wanted, verbose_console

    machine = output_format != "table"
    echo = console_echo(quiet, to_stderr=machine)
    with verbose_console(verbose, to_stderr=machine):
        if config.is_sweep:
            _pareto(config, out, resume, stop_after, quiet, echo, output_format)
            return
        from ..nas.search import search

        result = search(config, out=out, resume=resume, stop_after_epochs=stop_after,
                        progress=progress_wanted(quiet), echo=echo)
    if not is_main():               # under torchrun only rank 0 reports
        return
    if not result.finished:
        _stopped(result, output_format, "qnas search ...")
        return
    _report(result, output_format)


def _stopped(result, output_format: str, command: str) -> None:
    """A run stopped by --stop-after: how to continue (stderr), and what there is so far."""
    import json

    line = (f"stopped after epoch {len(result.log)}; continue with: {command} --out "
            f"{result.out} --resume")
    if output_format == "table":
        click.echo(line)
        return
    click.echo(line, err=True)
    if output_format == "json":
        click.echo(json.dumps({"finished": False, "epochs_done": len(result.log),
                               "out": str(result.out)}, indent=2))
    else:
        click.echo(result.log.to_csv(index=False), nl=False)


def _report(result, output_format: str = "table") -> None:
    """The end of a search: the log, the chosen layers, the latency with its source — as a
    table (appended to run.log too), the best.json-like summary as JSON, or the log as CSV."""
    import json

    from ..runtime.log import append_to_run_log

    if output_format == "json":
        summary = dict(result.best)
        summary["files"] = _files(result)
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    if output_format == "csv":
        click.echo(result.log.to_csv(index=False), nl=False)
        return
    text = "\n".join(_summary_lines(result))
    click.echo(text)
    append_to_run_log(result.out, text)


def _files(result) -> dict:
    from ..runtime.checkpoints import CheckpointStore

    return {"best_json": str(result.best_path), "child": str(result.child_path),
            "log": str(result.out / "search_log.csv"), "run_log": str(result.out / "run.log"),
            "checkpoints": [str(p) for p in CheckpointStore(result.out).paths()],
            "seconds": round(result.seconds, 1)}


def _summary_lines(result) -> list[str]:
    import pandas as pd

    from ..nas.search import summarize_log
    from ..units import format_ms

    best = result.best
    with pd.option_context("display.max_rows", 500, "display.width", 120):
        lines = [summarize_log(result.log), "",
                 result.layer_table().to_string(index=False, float_format=lambda v: f"{v:.3f}"),
                 ""]
    lines.append(f"{best['device']}: {format_ms(best['predicted_latency_ms'])} predicted "
                 f"(table sum {format_ms(best['lut_latency_ms'])}) for budget "
                 f"{format_ms(best['target_latency_ms'])} at "
                 f"{'x'.join(map(str, best['input_shape']))} "
                 f"[{best['predictor']['source']} {best['predictor']['version']}]")
    others = ", ".join(f"{name} {format_ms(v['latency_ms'])}" if "latency_ms" in v
                       else f"{name} (error)" for name, v in best["other_devices"].items())
    lines.append(f"other devices: {others}")
    lines.append(f"validation top-1 (inherited weights): {best['val_top1']:.1f}%")
    for warning in best.get("warnings") or []:
        lines.append(f"warning: {warning}")
    lines.append(f"best.json: {result.best_path}  ({result.seconds:.0f}s)")
    files = _files(result)
    kept = ", ".join(files["checkpoints"]) or "none (--keep-checkpoints 0)"
    lines.append(f"child.pt: {result.child_path}; checkpoints kept: {kept}; log: "
                 f"{files['run_log']}")
    return lines


def _pareto(config: SearchConfig, out, resume, stop_after, quiet, echo,
            output_format: str) -> None:
    """``--latency a,b,c``: one shared warm-up, one search per budget."""
    import json

    from ..errors import QnasError
    from ..experiments.pareto import pareto_search
    from ..experiments.provenance import command_line
    from ..runtime.distributed import is_main
    from ..runtime.log import append_to_run_log, progress_wanted
    from ..units import format_ms

    if stop_after is not None:
        raise QnasError("--stop-after does not apply to a Pareto search (several budgets); "
                        "interrupt it and continue with --resume")
    result = pareto_search(config, out=out, resume=resume, progress=progress_wanted(quiet),
                           echo=echo, command=command_line())
    if not is_main():
        return
    if output_format == "json":
        click.echo(json.dumps(json.loads(result.table.to_json(orient="records")), indent=2))
        return
    if output_format == "csv":
        click.echo(result.table.to_csv(index=False), nl=False)
        return
    lines = [f"budget {format_ms(row.budget_ms):>10s}: {format_ms(row.predicted_ms):>10s} "
             f"predicted, top-1 {row.val_top1:5.1f}% (inherited), "
             f"{'on the front' if row.on_front else 'dominated'}  "
             f"{result.out / row.best_json}" for row in result.table.itertuples()]
    lines.append(f"pareto: {result.csv}, {result.png}, {result.report}")
    click.echo("\n".join(lines))
    append_to_run_log(result.out, "\n".join(lines))


@cli.command("train-supernet", epilog="""\b
Examples:
  qnas train-supernet --warmup-epochs 6 --out runs/warm
  qnas search --device cortexA76 --latency 300ms --supernet runs/warm/supernet.pt""")
@config_options(SearchConfig, exclude=("device", "latency", "epochs", "supernet"),
                deprecated={"warmup_epochs": ("--epochs",)}, purpose=TRAINING)
@run_options(out_default="runs/supernet-<space>-s<seed>")
def train_supernet_command(out, resume, stop_after, quiet, verbose, **options) -> None:
    """Warm up a supernet (no device, no α) and write supernet.pt for 'qnas search --supernet'.

    Its length is --warmup-epochs ('--epochs' is the old spelling, accepted for one release)."""
    config = resolve_config(SearchConfig, options,
                            exclude=("device", "latency", "epochs", "supernet"),
                            finish=SearchConfig.warmup_only)
    from ..nas.search import train_supernet
    from ..runtime.distributed import is_main
    from ..runtime.log import console_echo, progress_wanted, verbose_console

    with verbose_console(verbose):
        path = train_supernet(config, out=out, resume=resume, stop_after_epochs=stop_after,
                              progress=progress_wanted(quiet), echo=console_echo(quiet))
    if not is_main():
        return
    click.echo("stopped early; continue with --resume" if path is None else f"supernet: {path}")
