"""``qnas demo``: the whole story on the embedded data (what ``make demo`` runs)."""
from __future__ import annotations

import time

import click

from . import cli
from .options import verbosity_options


@cli.command("demo", epilog="""\b
Examples:
  qnas demo                      # runs/demo: search -> export -> retrain -> latency
  qnas demo --out runs/demo2 -q  # elsewhere, printing only the summary
\b
Run it again to finish what an interrupted demo left (finished steps are skipped).""")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the demo's artefacts; a demo there is finished, not repeated.")
@verbosity_options
def demo_command(out: str, quiet: bool, verbose: bool) -> None:
    """Search (cortexA76, 300 ms, digit-pairs) → export → short retrain → latency report."""
    from ..demo import run_demo
    from ..runtime.log import console_echo, progress_wanted, verbose_console
    from ..units import format_ms

    started = time.perf_counter()
    with verbose_console(verbose):
        result = run_demo(out, progress=progress_wanted(quiet), echo=console_echo(quiet))
    facts = result.facts
    click.echo("")
    click.echo(f"searched:   {facts['ops']}")
    click.echo(f"            cortexA76 {format_ms(facts['predicted_ms'])} predicted for a "
               f"{format_ms(facts['budget_ms'])} budget [{facts['predictor']['source']} "
               f"{facts['predictor']['version']}; known error: "
               f"{facts['predictor']['known_error']}]")
    click.echo(f"            validation top-1 with inherited weights "
               f"{facts['inherited_top1']:.1f}%")
    click.echo(f"retrained:  {facts['retrained_top1']:.1f}% validation top-1 after "
               f"{facts['retrain_epochs']} epochs")
    measurement = facts["measurement"]
    click.echo(f"this host:  {measurement.pytorch_ms:.2f} ms PyTorch, "
               f"{measurement.onnxruntime_ms:.2f} ms onnxruntime (measured, "
               f"{measurement.threads} thread(s), {'x'.join(map(str, measurement.input_shape))}"
               f"); host-cpu table sum {facts['table_sum_error']:+.1%} off PyTorch")
    click.echo("")
    click.echo(f"best.json:  {result.best_path}  (+ child.pt: all that export and retrain "
               f"need)")
    click.echo(f"export:     {result.export_dir}  (child.pt, child.onnx, child.torchscript.pt, "
               f"MODEL_CARD.md)")
    click.echo(f"retrain:    {result.retrain_dir}  (best.pt, last-*.pt, retrain_log.csv, "
               f"retrain.json, run.log)")
    click.echo(f"log:        {result.out / 'search' / 'run.log'}, "
               f"{result.out / 'search' / 'search_log.csv'}")
    sizes = facts.get("sizes") or {}
    if sizes:
        click.echo("sizes:      " + ", ".join(f"{name} {size / 1e6:.2f} MB"
                                              for name, size in sizes.items()))
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
    click.echo(f"time:       {time.perf_counter() - started:.0f} s ({steps})")
