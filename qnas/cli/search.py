"""``qnas search``, ``qnas train-supernet`` and ``qnas bench supernet``: parse, call, report."""
from __future__ import annotations

import click

from ..nas import search as defaults
from ..runtime.distributed import is_main
from ..nas.proxyless import ProxylessConfig
from . import cli
from .bench import bench


def _common_options(function):
    options = [
        click.option("--space", default="quadranet", show_default=True,
                     help="Search space: a name from search_spaces/ or a YAML path."),
        click.option("--data", default="digits", show_default=True,
                     help="Dataset: digits, synthetic, cifar10:PATH, imagefolder:PATH."),
        click.option("--resolution", default=32, show_default=True, type=int,
                     help="Training resolution (latency is always predicted at the space's "
                          "deployment input shape)."),
        click.option("--batch-size", default=None, type=int,
                     help=f"Batch size of weight and arch steps  "
                          f"[default: {defaults.DEFAULT_BATCH_SIZE}]"),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--weight-lr", default=None, type=float,
                     help=f"SGD-Nesterov learning rate (cosine)  "
                          f"[default: {ProxylessConfig.weight_lr}]"),
        click.option("--layer-scale-init", default=defaults.SUPERNET_LAYER_SCALE_INIT,
                     show_default=True, type=float,
                     help="γ (layer scale) init of the supernet's QuadraBlocks."),
        click.option("--out", default=None, type=click.Path(file_okay=False),
                     help="Run folder  [default: runs/<space>-<device>-<budget>-s<seed>]"),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its "
                                                    "last checkpoint."),
        click.option("--stop-after", default=None, type=int,
                     help="Stop after this many epochs in this invocation (resume later)."),
        click.option("--threads", default=None, type=int,
                     help="torch intra-op threads while training  [default: all cores but "
                          "one]"),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _optim(weight_lr=None, arch_lr=None, arch_every=None):
    optim = defaults.default_optim()
    if weight_lr is not None:
        optim.weight_lr = weight_lr
    if arch_lr is not None:
        optim.arch_lr = arch_lr
    if arch_every is not None:
        optim.arch_every = arch_every
    return optim


@cli.command("search")
@click.option("--device", required=True,
              help="Target device (see 'qnas devices'), e.g. cortexA76.")
@click.option("--latency", required=True,
              help="Latency budget: 300ms, 0.3s or 300000us. Several, comma-separated "
                   "(300ms,200ms,120ms): a Pareto search — one shared warm-up, one search and "
                   "best.json per budget, pareto.csv and pareto.png.")
@_common_options
@click.option("--supernet", default=None, type=click.Path(dir_okay=False),
              help="Start from a warmed-up supernet (qnas train-supernet); skips the warm-up.")
@click.option("--epochs", default=None, type=int, help=f"Search epochs after the warm-up.  "
                                                       f"[default: {defaults.DEFAULT_EPOCHS}]")
@click.option("--warmup-epochs", default=None, type=int,
              help=f"Warm-up epochs (uniform paths, weights only)  [default: "
                   f"{defaults.DEFAULT_WARMUP_EPOCHS}; 0 with --supernet]")
@click.option("--loss", default=None, type=click.Choice(["add-linear", "mul-log", "hinge"]),
              help=f"How CE and E[LAT] combine  [default: {defaults.DEFAULT_LOSS}]")
@click.option("--lam", default=0.1, show_default=True, type=float,
              help="λ of add-linear and hinge.")
@click.option("--beta", default=0.6, show_default=True, type=float, help="β of mul-log.")
@click.option("--arch-lr", default=None, type=float,
              help=f"Adam learning rate of α (ProxylessNAS: 1e-3)  "
                   f"[default: {defaults.DEFAULT_ARCH_LR}]")
@click.option("--arch-every", default=None, type=int,
              help=f"One arch step per this many weight steps (ProxylessNAS: 5)  "
                   f"[default: {defaults.DEFAULT_ARCH_EVERY}]")
def search_command(device, latency, space, data, resolution, batch_size, seed, weight_lr,
                   layer_scale_init, out, resume, stop_after, threads, quiet, supernet, epochs,
                   warmup_epochs, loss, lam, beta, arch_lr, arch_every) -> None:
    """Search the best architecture within a latency budget on a device; writes best.json."""
    import pandas as pd
    from tqdm.auto import tqdm

    from ..units import format_ms
    from ..nas.search import SearchConfig, search, summarize_log

    settings = dict(device=device, latency=latency, space=space, data=data,
                    resolution=resolution, seed=seed, supernet=supernet, lam=lam, beta=beta,
                    layer_scale_init=layer_scale_init, warmup_epochs=warmup_epochs,
                    optim=_optim(weight_lr, arch_lr, arch_every))
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("loss", loss)):
        if value is not None:
            settings[key] = value
    if "," in latency:
        _pareto(settings, latency, out, resume, stop_after, threads, quiet)
        return
    config = SearchConfig(**settings)
    result = search(config, out=out, resume=resume, stop_after_epochs=stop_after,
                    progress=not quiet, echo=tqdm.write, threads=threads)
    if not is_main():               # under torchrun only rank 0 reports
        return
    if not result.finished:
        click.echo(f"stopped after epoch {len(result.log)}; continue with: qnas search ... "
                   f"--out {result.out} --resume")
        return
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
    click.echo(f"best.json: {result.best_path}  ({result.seconds:.0f}s)")


def _pareto(settings: dict, latency: str, out, resume, stop_after, threads, quiet) -> None:
    """``--latency a,b,c``: one shared warm-up, one search per budget (qnas.experiments)."""
    from tqdm.auto import tqdm

    from ..errors import QnasError
    from ..experiments.pareto import PARETO_CSV, PARETO_PNG, pareto_search, parse_budgets
    from ..experiments.provenance import command_line
    from ..units import format_ms
    from ..nas.search import SearchConfig

    if stop_after is not None:
        raise QnasError("--stop-after does not apply to a Pareto search (several budgets); "
                        "interrupt it and continue with --resume")
    budgets = parse_budgets(latency)
    config = SearchConfig(**{**settings, "latency": budgets[0]})
    paths = pareto_search(config, budgets, out=out, resume=resume, progress=not quiet,
                          echo=tqdm.write, threads=threads, command=command_line())
    if not is_main():
        return
    import pandas as pd

    folder = paths[0].parent.parent
    frame = pd.read_csv(folder / PARETO_CSV)
    for row in frame.itertuples():
        click.echo(f"budget {format_ms(row.budget_ms):>10s}: {format_ms(row.predicted_ms):>10s} "
                   f"predicted, top-1 {row.val_top1:5.1f}% (inherited), "
                   f"{'on the front' if row.on_front else 'dominated'}  {folder / row.best_json}")
    click.echo(f"pareto: {folder / PARETO_CSV}, {folder / PARETO_PNG}, {folder / 'report.md'}")


@cli.command("train-supernet")
@_common_options
@click.option("--epochs", default=None, type=int,
              help=f"Warm-up epochs (uniform path sampling, weights only)  "
                   f"[default: {defaults.DEFAULT_WARMUP_EPOCHS}]")
def train_supernet_command(space, data, resolution, batch_size, seed, weight_lr,
                           layer_scale_init, out, resume, stop_after, threads, quiet,
                           epochs) -> None:
    """Warm up a supernet (no device, no α) and write supernet.pt for 'qnas search --supernet'."""
    from tqdm.auto import tqdm

    from ..nas.search import SearchConfig, train_supernet

    settings = dict(space=space, data=data, resolution=resolution, seed=seed,
                    optim=_optim(weight_lr), warmup_epochs=epochs,
                    layer_scale_init=layer_scale_init)
    if batch_size is not None:
        settings["batch_size"] = batch_size
    path = train_supernet(SearchConfig(**settings), out=out, resume=resume,
                          stop_after_epochs=stop_after, progress=not quiet, echo=tqdm.write,
                          threads=threads)
    if not is_main():
        return
    if path is None:
        click.echo("stopped early; continue with --resume")
    else:
        click.echo(f"supernet: {path}")


@bench.command("supernet")
@click.option("--space", default="quadranet", show_default=True)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--resolution", default=32, show_default=True, type=int)
@click.option("--rounds", default=10, show_default=True, type=int,
              help="Timed rounds (each runs the three steps once; medians).")
@click.option("--warmup", default=2, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=None, type=int,
              help="torch intra-op threads  [default: torch's]")
def bench_supernet_command(space, batch_size, resolution, rounds, warmup, seed, threads) -> None:
    """Step time and saved activations: supernet weight/arch step vs the same child's step."""
    from ..bench.supernet import SupernetBenchConfig, bench_supernet

    if rounds < 1 or batch_size < 1:
        raise click.BadParameter("--rounds and --batch-size must be ≥ 1")
    table = bench_supernet(SupernetBenchConfig(space=space, batch_size=batch_size,
                                               resolution=resolution, rounds=rounds,
                                               warmup=warmup, seed=seed, threads=threads))
    attrs = table.attrs
    click.echo(f"space {attrs['space']}, batch {attrs['batch_size']}, "
               f"{attrs['resolution']}x{attrs['resolution']}, {attrs['threads']} threads, "
               f"{attrs['rounds']} rounds; child: {' '.join(attrs['ops'])}")
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}",
                               na_rep="-"))
    weight = table.set_index("step").loc["supernet weight step"]
    arch = table.set_index("step").loc["supernet arch step"]
    click.echo(f"step-time ratio supernet/child: weight {weight.time_ratio:.2f} (goal ≤ "
               f"{weight.time_goal}), arch {arch.time_ratio:.2f} (goal ≤ {arch.time_goal}); "
               f"saved-for-backward ratio {weight.saved_ratio:.2f} (goal ≤ {weight.saved_goal})")
