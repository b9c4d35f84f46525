"""``qnas demo``: the whole story on the embedded data (what ``make demo`` runs)."""
from __future__ import annotations

import time

import click

from . import cli


@cli.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder of the demo's artefacts; a demo there is finished, not repeated.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def demo_command(out: str, quiet: bool) -> None:
    """Search (cortexA76, 300 ms, digits) → export → short retrain → latency report."""
    from tqdm.auto import tqdm

    from ..demo import run_demo
    from ..units import format_ms

    started = time.perf_counter()
    result = run_demo(out, progress=not quiet, echo=tqdm.write)
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
    click.echo(f"best.json:  {result.best_path}")
    click.echo(f"export:     {result.export_dir}  (child.pt, child.onnx, child.torchscript.pt, "
               f"MODEL_CARD.md)")
    click.echo(f"retrain:    {result.retrain_dir}  (best.pt, last-*.pt, retrain_log.csv, "
               f"retrain.json)")
    click.echo(f"log:        {result.out / 'search' / 'search_log.csv'}")
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.seconds.items())
    click.echo(f"time:       {time.perf_counter() - started:.0f} s ({steps})")
