"""Experiments that reproduce the paper's tables, Pareto searches and reports.

    >>> from qnas.experiments import run_experiment, write_report, pareto_search
    >>> out = run_experiment("table3")                 # experiments/table3.yaml → runs/experiments/table3
    >>> write_report("runs/cortexA76-run")             # report.md + PNG plots of one search run

:mod:`.config` loads and validates ``experiments/*.yaml`` (the single source of each table's
numbers); :mod:`.runner` runs them (``blocks`` = Table II, ``nas`` = Table III, ``ablation`` =
Table IV); :mod:`.pareto` sweeps several budgets from a shared warm-up; :mod:`.results` owns
the results files and rows; :mod:`.report` writes ``report.md`` (:mod:`.run_report` for search
runs, :mod:`.table_reports` for the tables, :mod:`.markdown`, :mod:`.plots` on Agg).
"""
from .config import (
    KINDS,
    Experiment,
    Target,
    experiment_from_dict,
    find_experiment,
    list_experiments,
    load_experiment,
)
from .pareto import pareto_search
from .report import write_report
from .results import pareto_front, read_manifest
from .runner import run_experiment

__all__ = ["run_experiment", "load_experiment", "experiment_from_dict", "find_experiment",
           "list_experiments", "Experiment", "Target", "KINDS", "write_report", "pareto_search",
           "pareto_front", "read_manifest"]
