"""Wheel build hook: ship the experiment configs (experiments/*.yaml) as qnas/_data/experiments/,
but not experiments/results/ (reports and plots of past runs)."""
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        for path in sorted(Path(self.root, "experiments").glob("*.yaml")):
            build_data["force_include"][str(path)] = f"qnas/_data/experiments/{path.name}"
