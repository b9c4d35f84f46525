"""``qnas bench supernet``: does a supernet step cost about one child's?

For one architecture sampled from the space, side by side on the same batch:

- child weight step: the plain child network (``Supernet.child``), forward + backward + SGD;
- supernet weight step: the supernet running that same path (one op per layer);
- supernet arch step: two paths per layer (the same one active), α gradient, Adam, rescale.

Rounds interleave the three (fair on a shared CPU); the table reports median step times,
their ratio to the child's (goals: weight ≤ 1.15, arch ≤ 2.3) and the activation bytes saved
for backward (parameters excluded; goal for the weight step ≤ 1.2× the child's).

``device`` (``"cuda"``: ``qnas bench gpu``), ``precision`` (the search's autocast, all three
steps alike) and ``peak`` (peak memory of each step, :func:`.measure.peak_step_bytes`) are the
GPU benchmark's; their defaults measure exactly what ``qnas bench supernet`` always did.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..nas.proxyless import ProxylessStrategy, no_weight_grads
from ..nas.supernet import Supernet
from ..runtime.precision import Precision
from ..runtime.threads import BENCHMARK, torch_threads
from ..space import load_space
from .config import SupernetBenchConfig
from .measure import peak_step_bytes, saved_bytes, time_round_robin

WEIGHT_GOAL, ARCH_GOAL, MEMORY_GOAL = 1.15, 2.3, 1.2


def sample_architecture(space, seed: int) -> list[str]:
    """A uniformly random child of ``space`` (reproducible in ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    ops = []
    for slot in space.layers:
        ops.append(slot.ops[int(torch.randint(len(slot.ops), (1,), generator=generator))])
    return ops


def bench_supernet(config: SupernetBenchConfig | None = None, device: str = "cpu",
                   precision: str = "fp32", peak: bool = False) -> pd.DataFrame:
    """Run the benchmark; one row per step kind (see the module doc for ``device``,
    ``precision`` and ``peak``)."""
    config = config or SupernetBenchConfig()
    with torch_threads(config.threads, BENCHMARK) as threads:
        space = load_space(config.space)
        torch.manual_seed(config.seed)
        supernet = Supernet(space, config.num_classes, weight_sharing=config.weight_sharing)
        supernet.to(device)
        mixed = Precision(precision, device)
        strategy = ProxylessStrategy(supernet, seed=config.seed, precision=mixed)
        ops = sample_architecture(space, config.seed)
        paths = torch.tensor([space.candidates.index(op) for op in ops])
        generator = torch.Generator().manual_seed(config.seed + 1)
        others = []
        for slot, op in zip(space.layers, ops):
            choices = [o for o in slot.ops if o != op]
            others.append(space.candidates.index(
                choices[int(torch.randint(len(choices), (1,), generator=generator))]))
        pairs = torch.stack([paths, torch.tensor(others)], dim=1)
        child = supernet.child(ops)
        child_optimizer = torch.optim.SGD(child.parameters(), lr=0.025, momentum=0.9,
                                          nesterov=True, weight_decay=4e-5)
        images = torch.randn(config.batch_size, 3, config.resolution, config.resolution,
                             generator=torch.Generator().manual_seed(config.seed)).to(device)
        labels = torch.randint(0, config.num_classes, (config.batch_size,),
                               generator=torch.Generator().manual_seed(config.seed)).to(device)

        def child_step():
            child.train()
            with mixed.autocast():
                logits = child(images)
            loss = F.cross_entropy(logits.float(), labels)
            child_optimizer.zero_grad(set_to_none=True)
            mixed.backward(loss)
            mixed.step(child_optimizer)

        steps = {
            "child weight step": child_step,
            "supernet weight step": lambda: strategy.weight_step(images, labels, 0, paths=paths),
            "supernet arch step": lambda: strategy.arch_step(images, labels, 0, pairs=pairs),
        }
        seconds = time_round_robin(steps, config.rounds, config.warmup, device)
        peaks = {name: peak_step_bytes(step, device)[0] for name, step in steps.items()} \
            if peak else None

        with mixed.autocast():
            memory = {
                "child weight step": _forward_saved(lambda: child(images), child),
                "supernet weight step": _forward_saved(
                    lambda: (supernet.set_paths(paths), supernet(images)), supernet),
                "supernet arch step": _forward_saved(
                    lambda: (supernet.set_pairs(pairs), supernet(images)), supernet,
                    frozen=True),
            }
        supernet.clear_paths()

    base_ms = seconds["child weight step"] * 1e3
    base_bytes = memory["child weight step"]
    goals = {"child weight step": None, "supernet weight step": WEIGHT_GOAL,
             "supernet arch step": ARCH_GOAL}
    rows = []
    for name in steps:
        ms = seconds[name] * 1e3
        rows.append({"step": name, "median_ms": ms, "time_ratio": ms / base_ms,
                     "time_goal": goals[name], "saved_MiB": memory[name] / 2 ** 20,
                     "saved_ratio": memory[name] / base_bytes,
                     "saved_goal": MEMORY_GOAL if name == "supernet weight step" else None})
        if peaks is not None:
            rows[-1].update(peak_MiB=peaks[name] / 2 ** 20,
                            peak_ratio=peaks[name] / peaks["child weight step"])
    table = pd.DataFrame(rows)
    table.attrs.update(space=space.name, ops=ops, batch_size=config.batch_size,
                       resolution=config.resolution, rounds=config.rounds,
                       threads=threads, device=device, precision=mixed.name)
    return table


def _forward_saved(forward: Callable[[], object], module: nn.Module, frozen: bool = False) -> int:
    """Saved bytes of one training-mode forward (``frozen``: weights off the graph, as in the
    arch step)."""
    module.train()
    context = no_weight_grads(module.parameters()) if frozen else contextlib.nullcontext()
    with context:
        return saved_bytes(forward, exclude=list(module.parameters()))
