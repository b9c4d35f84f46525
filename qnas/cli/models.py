"""``qnas models``: list the registered model constructors."""
from __future__ import annotations

import click

from . import cli


@cli.command("models", epilog="""\b
Example:
  qnas models
  python -c "import qnas, timm; print(timm.create_model('quadranet_t'))"
""")
def models_command() -> None:
    """List the QuadraNet models registered with timm."""
    import timm

    from ..models import MODEL_NAMES

    for name in MODEL_NAMES:
        model = timm.create_model(name, num_classes=1000)
        params = sum(p.numel() for p in model.parameters())
        click.echo(f"{name:18s} width={model.dims[0]:4d} depths={[len(s) for s in model.layer_ops]} "
                   f"params={params / 1e6:.2f}M")
