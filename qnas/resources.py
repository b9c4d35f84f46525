"""Locate the YAML data folders (search_spaces/, predictors/, experiments/).

In a wheel they live in ``qnas/_data/<name>``; in a source checkout (editable install)
they are the top-level folders of the repository. Both are the same files.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder holding the shipped data ``name`` (e.g. ``"search_spaces"``)."""
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"qnas data folder '{name}' not found next to {_PACKAGE_DIR}")
