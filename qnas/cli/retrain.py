"""``qnas retrain``: parse, call :func:`qnas.train.retrain`, report. Its options come from
:class:`qnas.train.config.RetrainConfig`."""
from __future__ import annotations

import click

from ..train.config import RetrainConfig
from . import cli
from .options import config_options, resolve_config, run_options


@cli.command("retrain", epilog="""\b
Examples:
  qnas retrain runs/x/best.json
  qnas retrain runs/x/best.json --epochs 300 --lr 4e-3 --data imagefolder:/data/imagenet
  qnas retrain runs/x/best.json --init inherit --ema""")
@click.argument("best_json", type=click.Path(dir_okay=False))
@config_options(RetrainConfig)
@run_options(out_default="<best.json's folder>/retrain")
def retrain_command(best_json, out, resume, stop_after, quiet, **options) -> None:
    """Train the child of BEST_JSON (from 'qnas search') with the paper's recipe; report its
    validation top-1 and write last-<step>.pt, best.pt, retrain_log.csv and retrain.json."""
    config = resolve_config(RetrainConfig, options)
    from tqdm.auto import tqdm

    from ..runtime.distributed import is_main
    from ..train.retraining import retrain

    result = retrain(best_json, config, out=out, resume=resume, progress=not quiet,
                     echo=tqdm.write, stop_after_epochs=stop_after)
    if not is_main():               # under torchrun only rank 0 reports
        return
    if not result.finished:
        click.echo(f"stopped after epoch {len(result.log)}; continue with: qnas retrain "
                   f"{best_json} ... --out {result.out} --resume")
        return
    text = (f"validation top-1: {result.top1:.1f}% on {result.dataset} ({result.val_size} "
            f"images), best {result.best_top1:.1f}% at epoch {result.best_epoch}")
    if result.ema_top1 is not None:
        text += f", EMA {result.ema_top1:.1f}%"
    click.echo(text)
    click.echo(f"checkpoints: {result.best_path} (best), {result.last_path} (last); log "
               f"{result.log_path}; summary {result.summary_path}  ({result.seconds:.0f}s)")
