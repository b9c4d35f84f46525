"""Lazy package attributes (PEP 562): ``qnas.nas.search`` and friends are imported when first
used, so that ``import qnas.nas.config`` — which the CLI needs for ``--help`` — does not load
torch."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose ``exports`` map a public name to the
    submodule (relative to ``package``) that defines it."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
