"""``qnas retrain``: parse, call :func:`qnas.train.retrain`, report."""
from __future__ import annotations

import click

from . import cli


@cli.command("retrain")
@click.argument("best_json", type=click.Path(dir_okay=False))
@click.option("--epochs", default=None, type=int, help="Training epochs  [default: 10]")
@click.option("--data", default="digits", show_default=True,
              help="Dataset: digits, synthetic, cifar10:PATH, imagefolder:PATH.")
@click.option("--init", "init", default="scratch", show_default=True,
              type=click.Choice(["scratch", "inherit"]),
              help="Fresh weights, or the supernet's weights of the chosen ops.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Run folder  [default: <best.json's folder>/retrain]")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest good checkpoint.")
@click.option("--batch-size", default=None, type=int, help="Batch size  [default: 64]")
@click.option("--lr", default=None, type=float,
              help="Base learning rate at batch 4096; AdamW uses lr × batch/4096  "
                   "[default: 0.128, i.e. 2e-3 at batch 64; the paper's is 4e-3]")
@click.option("--resolution", default=None, type=int,
              help="Training resolution  [default: the search's, from best.json]")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the split, the initialisation and the batch order.")
@click.option("--ema/--no-ema", default=False, show_default=True,
              help="Keep an EMA of the weights (best.pt is then chosen on the EMA's top-1).")
@click.option("--drop-path", default=None, type=float,
              help="DropPath (stochastic depth) rate  [default: 0.1; 0 for mbconv spaces]")
@click.option("--stop-after", default=None, type=int,
              help="Stop after this many epochs in this invocation (resume later).")
@click.option("--threads", default=None, type=int,
              help="torch intra-op threads  [default: all cores but one]")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def retrain_command(best_json, epochs, data, init, out, resume, batch_size, lr, resolution, seed,
                    ema, drop_path, stop_after, threads, quiet) -> None:
    """Train the child of BEST_JSON (from 'qnas search') with the paper's recipe; report its
    validation top-1 and write last-<step>.pt, best.pt, retrain_log.csv and retrain.json."""
    from tqdm.auto import tqdm

    from ..runtime.distributed import is_main
    from ..train import RetrainConfig, retrain

    settings = dict(data=data, init=init, seed=seed, ema=ema, resolution=resolution,
                    drop_path_rate=drop_path, threads=threads)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr)):
        if value is not None:
            settings[key] = value
    result = retrain(best_json, RetrainConfig(**settings), out=out, resume=resume,
                     progress=not quiet, echo=tqdm.write, stop_after_epochs=stop_after)
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
