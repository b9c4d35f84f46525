"""``qnas retrain``: parse, call :func:`qnas.train.retrain`, report. Its options come from
:class:`qnas.train.config.RetrainConfig`."""
from __future__ import annotations

import click

from ..runtime.threads import TRAINING
from ..train.config import RetrainConfig
from . import cli
from .options import config_options, format_option, resolve_config, run_options


@cli.command("retrain", epilog="""\b
Examples:
  qnas retrain runs/x/best.json
  qnas retrain runs/x/best.json --lr 1e-3 --batch-size 64 --warmup-epochs 2
  qnas retrain runs/x/best.json --epochs 300 --lr-base 4e-3 --data imagefolder:/data/imagenet
  qnas retrain runs/x/best.json --init inherit --ema --format json
\b
--lr is the peak learning rate as given (timm's --lr); without it the rate is
--lr-base x batch / --lr-base-size. The first line of the run (and of run.log) says which.""")
@click.argument("best_json", type=click.Path(dir_okay=False))
@config_options(RetrainConfig, purpose=TRAINING)
@run_options(out_default="<best.json's folder>/retrain")
@format_option(csv="the per-epoch log")
def retrain_command(best_json, out, resume, stop_after, quiet, verbose, output_format,
                    **options) -> None:
    """Train the child of BEST_JSON (from 'qnas search') with the paper's recipe; report its
    validation top-1 and write last-<step>.pt, best.pt, retrain_log.csv, run.log and
    retrain.json."""
    config = resolve_config(RetrainConfig, options)
    from ..runtime.distributed import is_main
    from ..runtime.log import console_echo, progress_wanted, verbose_console
    from ..train.retraining import retrain

    machine = output_format != "table"
    with verbose_console(verbose, to_stderr=machine):
        result = retrain(best_json, config, out=out, resume=resume,
                         progress=progress_wanted(quiet),
                         echo=console_echo(quiet, to_stderr=machine),
                         stop_after_epochs=stop_after)
    if not is_main():               # under torchrun only rank 0 reports
        return
    if not result.finished:
        from .search import _stopped

        _stopped(result, output_format, f"qnas retrain {best_json} ...")
        return
    _report(result, output_format)


def _report(result, output_format: str) -> None:
    import json

    from ..runtime.log import append_to_run_log

    if output_format == "json":
        click.echo(json.dumps({**json.loads(result.summary_path.read_text()),
                               "files": {"out": str(result.out), "best": str(result.best_path),
                                         "last": str(result.last_path),
                                         "log": str(result.log_path),
                                         "summary": str(result.summary_path),
                                         "run_log": str(result.out / "run.log")}},
                              indent=2))
        return
    if output_format == "csv":
        click.echo(result.log.to_csv(index=False), nl=False)
        return
    text = (f"validation top-1: {result.top1:.1f}% on {result.dataset} ({result.val_size} "
            f"images), best {result.best_top1:.1f}% at epoch {result.best_epoch}")
    if result.ema_top1 is not None:
        text += f", EMA {result.ema_top1:.1f}%"
    lines = [text + f" (lr {result.effective_lr:.3g})",
             (f"checkpoints: {result.best_path} (best), {result.last_path} (last); log "
              f"{result.log_path}, {result.out / 'run.log'}; summary {result.summary_path}  "
              f"({result.seconds:.0f}s)")]
    click.echo("\n".join(lines))
    append_to_run_log(result.out, "\n".join(lines))
