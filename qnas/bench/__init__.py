"""Benchmarks a notebook can call; ``qnas bench ...`` only parses options and prints."""
from .blocks import (BLOCK_KINDS, BlockBenchConfig, build_stack, count_macs, goal_summary,
                     peak_step_bytes, run_block_bench, run_quadraconv_bench, saved_bytes)

__all__ = ["BLOCK_KINDS", "BlockBenchConfig", "build_stack", "count_macs", "goal_summary",
           "peak_step_bytes", "run_block_bench", "run_quadraconv_bench", "saved_bytes"]
