"""qnas: hardware-aware neural architecture search for QuadraNet.

``import qnas`` makes the QuadraNet family available to timm, so
``timm.create_model("quadranet_t", num_classes=10)`` works afterwards — whether timm was
imported before or after qnas. ``import qnas`` itself stays light (no torch, no timm), so the
``qnas`` command answers ``--help`` and ``--version`` at once: the family is registered when
timm is imported (or right away, when timm already is).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

from .errors import QnasError  # noqa: E402  (light: no torch)

__all__ = ["__version__", "QnasError"]


class _RegisterWithTimm(importlib.abc.MetaPathFinder):
    """Registers ``qnas.models`` with timm right after timm's first import (once)."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        run_timm = spec.loader.exec_module

        def exec_module(module):
            run_timm(module)
            if _initializing():         # a qnas module imports timm: register on first use
                _register_on_first_use(module)
            else:
                _register()

        spec.loader.exec_module = exec_module
        return spec


def _register() -> None:
    importlib.import_module(f"{__name__}.models")        # its constructors register themselves


def _initializing() -> bool:
    """Whether a qnas submodule is being imported right now (registering then would import
    qnas.models in the middle of it)."""
    return any(getattr(getattr(module, "__spec__", None), "_initializing", False)
               for key, module in list(sys.modules.items()) if key.startswith(f"{__name__}."))


def _register_on_first_use(timm) -> None:
    """Wrap timm's model lookups so that the first call registers the family, then unwraps."""
    originals = {name: getattr(timm, name) for name in ("create_model", "list_models",
                                                          "is_model")}

    def wrap(name, original):
        def first_call(*args, **kwargs):
            for key, function in originals.items():
                setattr(timm, key, function)
            _register()
            return original(*args, **kwargs)

        first_call.__doc__, first_call.__name__ = original.__doc__, original.__name__
        return first_call

    for name, original in originals.items():
        setattr(timm, name, wrap(name, original))


if "timm" in sys.modules:
    _register()
elif not any(isinstance(finder, _RegisterWithTimm) for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWithTimm())
