"""``qnas export``: parse, call :func:`qnas.deploy.export_child`, report."""
from __future__ import annotations

import click

from . import cli
from .options import verbosity_options


@cli.command("export", epilog="""\b
Examples:
  qnas export runs/x/best.json                   # -> runs/x/export/
  qnas export runs/x/best.json --formats onnx --opset 17 --out deploy/
\b
Needs best.json and the child.pt beside it (a best.json of qnas < 0.2: the supernet
checkpoint it names).""")
@click.argument("best", metavar="BEST_JSON")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Output folder  [default: <best.json folder>/export]")
@click.option("--formats", default="pt,onnx,torchscript", show_default=True,
              help="Comma-separated: pt, onnx, torchscript (or 'all'); MODEL_CARD.md always.")
@click.option("--opset", default=20, show_default=True, type=int,
              help="ONNX opset (17-20; 20 keeps LayerNorm and GELU single nodes).")
@click.option("--space", default=None,
              help="The search space's YAML, if best.json's recorded space cannot be found.")
@verbosity_options
def export_command(best: str, out: str | None, formats: str, opset: int,
                   space: str | None, quiet: bool, verbose: bool) -> None:
    """Build the child of BEST_JSON with its inherited weights, verify it, and write .pt,
    ONNX, TorchScript and a model card. Nothing is written if anything is refused or fails."""
    from ..deploy import export_child
    from ..runtime.log import console_echo, verbose_console

    with verbose_console(verbose):
        result = export_child(best, out=out, formats=formats, opset=opset, space=space,
                              echo=console_echo(quiet))
    click.echo(result.describe())
    checks = result.verification[["check", "input", "max_abs_diff", "atol"]].copy()
    if len(checks):
        checks["max_abs_diff"] = checks["max_abs_diff"].map("{:.2e}".format)
        import pandas as pd

        with pd.option_context("display.width", 200):
            click.echo("verified:\n" + checks.to_string(index=False))
    click.echo(f"weights: {result.weights}")
    for kind, path in result.files.items():
        click.echo(f"  {kind:12s} {path}")
