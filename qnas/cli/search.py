"""``qnas search`` and ``qnas train-supernet``: parse, call, report. Their options come from
:class:`qnas.nas.config.SearchConfig`."""
from __future__ import annotations

import click

from ..nas.config import SearchConfig
from . import cli
from .options import config_options, resolve_config, run_options


@cli.command("search", epilog="""\b
Examples:
  qnas search --device cortexA76 --latency 300ms
  qnas search --device myriadvpu --latency 30ms --epochs 20 --out runs/vpu
  qnas search --device cortexA76 --latency 300ms,200ms,120ms     # one warm-up, three searches
  qnas search --config runs/vpu/config.json --out runs/vpu-again  # repeat a run""")
@config_options(SearchConfig)
@run_options
def search_command(out, resume, stop_after, quiet, **options) -> None:
    """Search the best architecture within a latency budget on a device; writes best.json."""
    config = resolve_config(SearchConfig, options)
    from tqdm.auto import tqdm

    from ..runtime.distributed import is_main

    if config.is_sweep:
        _pareto(config, out, resume, stop_after, quiet)
        return
    from ..nas.search import search

    result = search(config, out=out, resume=resume, stop_after_epochs=stop_after,
                    progress=not quiet, echo=tqdm.write)
    if not is_main():               # under torchrun only rank 0 reports
        return
    if not result.finished:
        click.echo(f"stopped after epoch {len(result.log)}; continue with: qnas search ... "
                   f"--out {result.out} --resume")
        return
    _report(result)


def _report(result) -> None:
    """The end of a search: the log, the chosen layers, the latency with its source."""
    import pandas as pd

    from ..nas.search import summarize_log
    from ..units import format_ms

    best = result.best
    with pd.option_context("display.max_rows", 500, "display.width", 120):
        click.echo(summarize_log(result.log))
        click.echo()
        click.echo(result.layer_table().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    click.echo()
    click.echo(f"{best['device']}: {format_ms(best['predicted_latency_ms'])} predicted "
               f"(table sum {format_ms(best['lut_latency_ms'])}) for budget "
               f"{format_ms(best['target_latency_ms'])} at "
               f"{'x'.join(map(str, best['input_shape']))} "
               f"[{best['predictor']['source']} {best['predictor']['version']}]")
    others = ", ".join(f"{name} {format_ms(v['latency_ms'])}" if "latency_ms" in v
                       else f"{name} (error)" for name, v in best["other_devices"].items())
    click.echo(f"other devices: {others}")
    click.echo(f"validation top-1 (inherited weights): {best['val_top1']:.1f}%")
    for warning in best.get("warnings") or []:
        click.echo(f"warning: {warning}")
    click.echo(f"best.json: {result.best_path}  ({result.seconds:.0f}s)")


def _pareto(config: SearchConfig, out, resume, stop_after, quiet) -> None:
    """``--latency a,b,c``: one shared warm-up, one search per budget."""
    from tqdm.auto import tqdm

    from ..errors import QnasError
    from ..experiments.pareto import pareto_search
    from ..experiments.provenance import command_line
    from ..runtime.distributed import is_main
    from ..units import format_ms

    if stop_after is not None:
        raise QnasError("--stop-after does not apply to a Pareto search (several budgets); "
                        "interrupt it and continue with --resume")
    result = pareto_search(config, out=out, resume=resume, progress=not quiet,
                           echo=tqdm.write, command=command_line())
    if not is_main():
        return
    for row in result.table.itertuples():
        click.echo(f"budget {format_ms(row.budget_ms):>10s}: {format_ms(row.predicted_ms):>10s} "
                   f"predicted, top-1 {row.val_top1:5.1f}% (inherited), "
                   f"{'on the front' if row.on_front else 'dominated'}  "
                   f"{result.out / row.best_json}")
    click.echo(f"pareto: {result.csv}, {result.png}, {result.report}")


@cli.command("train-supernet", epilog="""\b
Examples:
  qnas train-supernet --warmup-epochs 6 --out runs/warm
  qnas search --device cortexA76 --latency 300ms --supernet runs/warm/supernet.pt""")
@config_options(SearchConfig, exclude=("device", "latency", "epochs", "supernet"))
@run_options(out_default="runs/supernet-<space>-s<seed>")
@click.option("--epochs", "legacy_epochs", default=None, type=int, hidden=True)
def train_supernet_command(out, resume, stop_after, quiet, legacy_epochs, **options) -> None:
    """Warm up a supernet (no device, no α) and write supernet.pt for 'qnas search --supernet'."""
    fixed = {}
    if legacy_epochs is not None:
        click.echo("note: 'qnas train-supernet --epochs' is deprecated; it is --warmup-epochs",
                   err=True)
        if options.get("warmup_epochs") is None:
            fixed["warmup_epochs"] = legacy_epochs
    config = resolve_config(SearchConfig, options, fixed,
                            exclude=("device", "latency", "epochs", "supernet"),
                            finish=SearchConfig.warmup_only)
    from tqdm.auto import tqdm

    from ..nas.search import train_supernet
    from ..runtime.distributed import is_main

    path = train_supernet(config, out=out, resume=resume, stop_after_epochs=stop_after,
                          progress=not quiet, echo=tqdm.write)
    if not is_main():
        return
    click.echo("stopped early; continue with --resume" if path is None else f"supernet: {path}")
