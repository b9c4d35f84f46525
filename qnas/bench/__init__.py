"""Benchmarks a notebook can call; ``qnas bench ...`` only parses options and prints.

:mod:`.blocks` (Table II: block stacks), :mod:`.quadraconv` (QuadraConv2d vs three depthwise
convs), :mod:`.supernet` (supernet steps vs the child's), :mod:`.predictor` (nn-Meter-format
host predictor vs measurements), :mod:`.profile_check` (a device profile vs a real device);
:mod:`.config` holds the block benchmark's settings, :mod:`.measure` how everything is measured.
"""
from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "BLOCK_KINDS": "config", "BlockBenchConfig": "config", "build_stack": "blocks",
    "goal_summary": "blocks", "run_block_bench": "blocks", "run_quadraconv_bench": "quadraconv",
    "peak_step_bytes": "measure", "saved_bytes": "measure",
})
