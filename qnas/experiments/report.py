"""``report.md`` with its PNG plots, for any folder qnas writes results into:

* an experiment results folder (``experiment.json``: Table II, III or IV — :mod:`.table_reports`);
* a Pareto search folder (``pareto.csv``) and one search run folder (``search_log.csv`` /
  ``best.json``) — :mod:`.run_report`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import QnasError
from . import search_vs_random
from .results import MANIFEST, PARETO_CSV, REPORT, SEARCH_FILES, read_manifest
from .run_report import pareto_report, plot_pareto_folder, search_run_report
from .table_reports import ablation_report, blocks_report, nas_report

__all__ = ["write_report", "search_run_report", "plot_pareto_folder", "REPORT"]

_BY_KIND = {"blocks": blocks_report, "nas": nas_report, "ablation": ablation_report,
            "search_vs_random": search_vs_random.report}


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` and its PNG plots; returns the report's path."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise QnasError(f"{folder} is not a folder; pass a run folder such as runs/<name> or an "
                        f"experiment results folder")
    if (folder / MANIFEST).is_file():
        manifest = read_manifest(folder)
        kind = manifest.get("kind")
        if kind not in _BY_KIND:
            raise QnasError(f"{folder / MANIFEST} has unknown kind {kind!r}")
        return _BY_KIND[kind](folder, manifest)
    if (folder / PARETO_CSV).is_file():
        return pareto_report(folder)
    if any((folder / name).is_file() for name in SEARCH_FILES):
        return search_run_report(folder)
    raise QnasError(f"{folder} holds no search run, Pareto search or experiment results "
                    f"(none of {MANIFEST}, {PARETO_CSV}, {', '.join(SEARCH_FILES)}); pass the "
                    f"folder 'qnas search' or 'qnas experiment run' wrote")
