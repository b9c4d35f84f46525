"""Experiments that reproduce the paper's tables, Pareto searches and reports.

    >>> from qnas.experiments import run_experiment, write_report, pareto_search
    >>> out = run_experiment("table3")                 # experiments/table3.yaml → runs/experiments/table3
    >>> write_report("runs/cortexA76-run")             # report.md + PNG plots of one search run

:mod:`.config` loads and validates ``experiments/*.yaml`` (the single source of each table's
numbers); :mod:`.runner` runs them (``blocks`` = Table II, ``nas`` = Table III, ``ablation`` =
Table IV); :mod:`.pareto` runs one search per budget from a shared warm-up; :mod:`.report`
writes ``report.md`` with tables and plots (:mod:`.plots`, matplotlib on Agg).
"""
from .config import (KINDS, Experiment, Target, experiment_from_dict, find_experiment,
                     list_experiments, load_experiment)
from .pareto import pareto_front, pareto_search, parse_budgets
from .report import write_report
from .runner import read_manifest, run_experiment

__all__ = ["run_experiment", "load_experiment", "experiment_from_dict", "find_experiment",
           "list_experiments", "Experiment", "Target", "KINDS", "write_report", "pareto_search",
           "parse_budgets", "pareto_front", "read_manifest"]
