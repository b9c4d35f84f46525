"""Experiment files: load and validate ``experiments/*.yaml``.

An experiment YAML is the single source of truth for one of the paper's tables: its budgets,
devices, spaces, epochs and data live there and nowhere in the code. Four kinds:

``blocks``    Table II — block memory and throughput (``qnas bench blocks``)::

                  kind: blocks
                  bench: {channels: [64, 128], layers: 24, batch: 4, ...}   # BlockBenchConfig
                  quadraconv: true                 # also QuadraConv2d vs three convs

``nas``       Table III — hardware-aware search per (device, budget) and space::

                  kind: nas
                  data: digits
                  resolution: 32
                  spaces: [quadranet, proxyless_mbconv]    # names or YAML paths
                  targets: [{device: cortexA76, latency: 300ms}, ...]
                  search: {epochs: 10, warmup_epochs: 6, ...}  # SearchConfig fields
                  retrain_epochs: 0                # > 0: also retrain each child that long
                  retrain: {...}                   # RetrainConfig fields (optional)
                  checkpoints: last                # keep (default) | last: prune search
                                                   # checkpoints once a search is evaluated

``ablation``  Table IV — QuadraNet with every block at kernel k, trained from scratch::

                  kind: ablation
                  data: digits
                  resolution: 32
                  width: 32
                  depths: [2, 2, 6, 2]
                  expansion: 4
                  kernels: [3, 5, 7, 9]
                  devices: [cortexA76, myriadvpu, a100]
                  train: {epochs: 10, ...}         # RetrainConfig fields

``search_vs_random``  the searched children against random children of the same latency band
              and the hand-designed QuadraNet (:mod:`.search_vs_random`)::

                  kind: search_vs_random
                  data: digit-pairs:val=3000,split=0
                  space: quadranet_shallow
                  target: {device: cortexA76, latency: 30ms}
                  search: {warmup_epochs: 96, epochs: 12}  # SearchConfig fields
                  search_seeds: [0, 1, 2, 3, 4]
                  random_children: 16              # drawn uniformly in [(1 - band) T, T]
                  band: 0.1
                  retrain: {epochs: 60}            # RetrainConfig fields
                  seeds: [0, 1, 2]                 # retraining seeds of every child
                  test: 20000                      # digit-pairs only: score the retrained
                                                   # children on this many test canvases

Every kind takes ``name`` (default: the file's stem), ``description`` and ``seed``. Relative
space paths are resolved against the YAML's folder. :func:`load_experiment` refuses (one-line
:class:`QnasError`) unknown kinds, unknown or missing keys, unknown devices and spaces, and
values the underlying configs refuse — before anything is run or written.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..bench.config import BlockBenchConfig
from ..errors import QnasError
from ..nas.config import SearchConfig
from ..resources import data_dir
from ..settings import from_dict
from ..space import load_space
from ..train.config import RetrainConfig
from ..units import parse_latency
from . import search_vs_random
from .checks import (
    RETRAIN_OWN,
    SEARCH_OWN,
    check_int,
    data_spec,
    device_name,
    mapping,
    own_settings,
    resolution,
)

KINDS = ("blocks", "nas", "ablation", "search_vs_random")
COMMON_KEYS = {"kind", "name", "description", "seed"}
KIND_KEYS = {
    "blocks": {"bench", "quadraconv"},
    "nas": {"data", "resolution", "spaces", "targets", "search", "retrain_epochs", "retrain",
            "checkpoints"},
    "ablation": {"data", "resolution", "width", "depths", "expansion", "kernels", "devices",
                 "input_shape", "train", "seeds"},
    "search_vs_random": search_vs_random.KEYS,
}
REQUIRED_KEYS = {
    "blocks": set(),
    "nas": {"spaces", "targets"},
    "ablation": {"width", "depths", "kernels", "devices"},
    "search_vs_random": search_vs_random.REQUIRED,
}
# overrides a command line may give, and the kinds each applies to
OVERRIDES = {"data": ("nas", "ablation", "search_vs_random"),
             "epochs": ("nas", "ablation", "search_vs_random"),
             "warmup_epochs": ("nas", "search_vs_random"), "retrain_epochs": ("nas",)}
# what a nas experiment keeps of the (large) search checkpoints once a search is evaluated:
# keep = everything, as 'qnas search' leaves it; last = only the checkpoint best.json names
# (export still works) and none of the warm-up's (its supernet.pt stays)
CHECKPOINT_POLICIES = ("keep", "last")



@dataclass(frozen=True)
class Target:
    """One (device, budget) of a ``nas`` experiment."""

    device: str
    latency_ms: float

    @property
    def label(self) -> str:
        return f"{self.device}-{self.latency_ms:g}ms"


@dataclass
class BlocksSettings:
    bench: dict                      # BlockBenchConfig keyword arguments
    quadraconv: bool = True


@dataclass
class NasSettings:
    data: str
    resolution: int
    spaces: list[str]                # names or resolved YAML paths, as load_space takes them
    space_names: list[str]
    targets: list[Target]
    search: SearchConfig             # the searches' settings (space: the first; no device)
    retrain_epochs: int = 0
    retrain: RetrainConfig | None = None     # the retraining of each child (None: none)
    checkpoints: str = "keep"        # keep | last (see CHECKPOINT_POLICIES)

    @property
    def devices(self) -> list[str]:
        return list(dict.fromkeys(t.device for t in self.targets))


@dataclass
class AblationSettings:
    data: str
    resolution: int
    width: int
    depths: list[int]
    expansion: int | float
    kernels: list[int]
    devices: list[str]
    input_shape: list[int]
    train: RetrainConfig             # the training of each kernel size (seed: the first)
    seeds: list[int]


@dataclass
class Experiment:
    """A loaded, validated experiment file (overrides applied)."""

    path: Path
    name: str
    kind: str
    description: str
    seed: int
    settings: Any                    # BlocksSettings | NasSettings | AblationSettings
    raw: dict                        # the YAML with the overrides applied (written to the run)
    overrides: dict = field(default_factory=dict)


# --- finding files --------------------------------------------------------------------------------

def experiments_dir() -> Path:
    return data_dir("experiments")


def list_experiments() -> list[dict]:
    """``[{name, kind, description, path}]`` of the shipped experiment files."""
    out = []
    for path in sorted(experiments_dir().glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            raw = {}
        raw = raw if isinstance(raw, dict) else {}
        out.append({"name": str(raw.get("name", path.stem)), "kind": str(raw.get("kind", "?")),
                    "description": str(raw.get("description", "")), "path": path})
    return out


def find_experiment(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a shipped experiment (``table3`` → experiments/table3.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.exists():
        raise QnasError(f"{path} is not a file; pass an experiment YAML or one of: "
                        f"{', '.join(e['path'].stem for e in list_experiments())}")
    shipped = experiments_dir() / f"{Path(str(name_or_path)).stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and len(path.parts) == 1 and shipped.is_file():
        return shipped
    raise QnasError(f"experiment {name_or_path} not found; pass a YAML file or one of: "
                    f"{', '.join(e['path'].stem for e in list_experiments())}")


# --- loading ----------------------------------------------------------------------------------------

def load_experiment(name_or_path: str | Path, overrides: dict | None = None) -> Experiment:
    """Read and validate an experiment YAML; ``overrides`` (``data``, ``epochs``,
    ``warmup_epochs``, ``retrain_epochs``; None values ignored) replace the file's values."""
    path = find_experiment(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise QnasError(f"experiment {path} is not valid YAML: "
                        f"{str(err).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise QnasError(f"cannot read experiment {path} ({type(err).__name__})") from None
    return experiment_from_dict(raw, path, overrides)


def experiment_from_dict(raw: Any, path: str | Path = "<dict>",
                         overrides: dict | None = None) -> Experiment:
    path = Path(path)
    where = f"experiment {path}"
    if not isinstance(raw, dict):
        raise QnasError(f"{where} must be a YAML mapping with a 'kind' "
                        f"({', '.join(KINDS)})")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise QnasError(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    allowed = COMMON_KEYS | KIND_KEYS[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise QnasError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for kind "
                        f"'{kind}'; known keys: {', '.join(sorted(allowed))}")
    missing = sorted(REQUIRED_KEYS[kind] - set(raw))
    if missing:
        raise QnasError(f"{where}: missing key(s) {', '.join(map(repr, missing))} (kind "
                        f"'{kind}' needs {', '.join(sorted(REQUIRED_KEYS[kind]))})")
    raw = copy.deepcopy(raw)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _apply_overrides(raw, kind, overrides, where)

    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise QnasError(f"{where}: name must be a non-empty string without '/', got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise QnasError(f"{where}: description must be a string")
    seed = check_int(raw.get("seed", 0), "seed", where, low=0)
    base = path.parent
    if kind == "blocks":
        settings = _blocks(raw, where)
    elif kind == "nas":
        settings = _nas(raw, seed, base, where)
    elif kind == "ablation":
        settings = _ablation(raw, seed, where)
    else:
        settings = search_vs_random.parse(raw, seed, base, where)
    return Experiment(path=path, name=name.strip(), kind=kind, description=description.strip(),
                      seed=seed, settings=settings, raw=raw, overrides=overrides)


def _apply_overrides(raw: dict, kind: str, overrides: dict, where: str) -> None:
    for key, value in overrides.items():
        if key not in OVERRIDES:
            raise QnasError(f"unknown override {key!r}; known: {', '.join(OVERRIDES)}")
        if kind not in OVERRIDES[key]:
            option = "--" + key.replace("_", "-")
            raise QnasError(f"{where} is a '{kind}' experiment: {option} applies only to "
                            f"{' and '.join(OVERRIDES[key])} experiments")
        if key == "data":
            raw["data"] = value
        elif kind in ("nas", "search_vs_random") and key in ("epochs", "warmup_epochs"):
            raw.setdefault("search", {})
            if not isinstance(raw["search"], dict):
                raise QnasError(f"{where}: 'search' must be a mapping of search settings")
            raw["search"][key] = value
        elif key == "retrain_epochs":
            raw["retrain_epochs"] = value
        elif kind == "ablation" and key == "epochs":
            raw.setdefault("train", {})
            if not isinstance(raw["train"], dict):
                raise QnasError(f"{where}: 'train' must be a mapping of training settings")
            raw["train"]["epochs"] = value


# --- kinds ------------------------------------------------------------------------------------------

def _blocks(raw: dict, where: str) -> BlocksSettings:
    bench = mapping(raw, "bench", where)
    from_dict(BlockBenchConfig, bench, f"{where}: bench")
    quadraconv = raw.get("quadraconv", True)
    if not isinstance(quadraconv, bool):
        raise QnasError(f"{where}: quadraconv must be true or false, got {quadraconv!r}")
    return BlocksSettings(bench=bench, quadraconv=quadraconv)


def _nas(raw: dict, seed: int, base: Path, where: str) -> NasSettings:
    data = data_spec(raw, where)
    size = resolution(raw, where)
    spaces_raw = raw["spaces"]
    if not isinstance(spaces_raw, list) or not spaces_raw:
        raise QnasError(f"{where}: spaces must be a non-empty list of space names or YAML paths")
    spaces, names = [], []
    for entry in spaces_raw:
        if not isinstance(entry, str):
            raise QnasError(f"{where}: spaces: {entry!r} is not a space name or path")
        spec = entry
        candidate = Path(entry)
        if candidate.suffix in (".yaml", ".yml") and not candidate.is_absolute():
            candidate = base / candidate
        if candidate.suffix in (".yaml", ".yml"):
            if not candidate.is_file():
                raise QnasError(f"{where}: space file {candidate} does not exist")
            spec = str(candidate.resolve())
        try:
            space = load_space(spec)
            space.check_resolution(size)
        except QnasError as err:
            raise QnasError(f"{where}: spaces: {err}") from None
        if space.name in names:
            raise QnasError(f"{where}: two spaces are named '{space.name}'; give each its own "
                            f"name")
        spaces.append(spec)
        names.append(space.name)

    targets_raw = raw["targets"]
    if not isinstance(targets_raw, list) or not targets_raw:
        raise QnasError(f"{where}: targets must be a non-empty list of {{device, latency}}")
    targets = []
    for i, entry in enumerate(targets_raw):
        context = f"targets[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"device", "latency"}:
            raise QnasError(f"{where}: {context} must be a mapping with exactly 'device' and "
                            f"'latency' (e.g. {{device: cortexA76, latency: 300ms}}), got "
                            f"{entry!r}")
        device = device_name(entry["device"], where, context)
        latency = entry["latency"]
        try:
            latency_ms = parse_latency(latency)   # a unit is required: 300ms, 0.3s
        except (QnasError, ValueError) as err:
            raise QnasError(f"{where}: {context}: {err}") from None
        target = Target(device, float(latency_ms))
        if target in targets:
            raise QnasError(f"{where}: {context} repeats {device} at {latency}")
        targets.append(target)

    search = own_settings(mapping(raw, "search", where), SEARCH_OWN, where, "search")
    template = from_dict(SearchConfig, {**search, "space": spaces[0], "data": data,
                                        "resolution": size, "seed": seed},
                         f"{where}: search")
    for target in targets:               # the loss must work at every budget
        try:
            template.for_budget(target.latency_ms, device=target.device)
        except QnasError as err:
            raise QnasError(f"{where}: search: {err}") from None
    retrain_epochs = check_int(raw.get("retrain_epochs", 0), "retrain_epochs", where, low=0)
    retrain = own_settings(mapping(raw, "retrain", where), RETRAIN_OWN, where, "retrain")
    retrain_config = None
    if retrain_epochs:
        retrain_config = from_dict(RetrainConfig, {**retrain, "epochs": retrain_epochs,
                                                   "data": data, "seed": seed,
                                                   "resolution": size},
                                   f"{where}: retrain")
    checkpoints = raw.get("checkpoints", "keep")
    if checkpoints not in CHECKPOINT_POLICIES:
        raise QnasError(f"{where}: checkpoints must be one of {', '.join(CHECKPOINT_POLICIES)}, "
                        f"got {checkpoints!r}")
    return NasSettings(data=data, resolution=size, spaces=spaces, space_names=names,
                       targets=targets, search=template, retrain_epochs=retrain_epochs,
                       retrain=retrain_config, checkpoints=checkpoints)


def _ablation(raw: dict, seed: int, where: str) -> AblationSettings:
    data = data_spec(raw, where)
    size = resolution(raw, where)
    width = check_int(raw["width"], "width", where, low=1)
    depths = raw["depths"]
    if (not isinstance(depths, list) or len(depths) != 4
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in depths)):
        raise QnasError(f"{where}: depths must be four positive integers (QuadraNet's stages), "
                        f"got {depths!r}")
    expansion = raw.get("expansion", 4)
    if (isinstance(expansion, bool) or not isinstance(expansion, (int, float))
            or not math.isfinite(expansion) or expansion <= 0):
        raise QnasError(f"{where}: expansion must be a positive number, got {expansion!r}")
    kernels = raw["kernels"]
    if (not isinstance(kernels, list) or not kernels
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0
                   for k in kernels)):
        raise QnasError(f"{where}: kernels must be a non-empty list of odd positive integers "
                        f"(e.g. [3, 5, 7, 9]), got {kernels!r}")
    if len(set(kernels)) != len(kernels):
        raise QnasError(f"{where}: kernels repeat: {kernels}")
    devices_raw = raw["devices"]
    if not isinstance(devices_raw, list) or not devices_raw:
        raise QnasError(f"{where}: devices must be a non-empty list of device names")
    devices = [device_name(d, where, "devices") for d in devices_raw]
    input_shape = raw.get("input_shape", [1, 3, 224, 224])
    if (not isinstance(input_shape, list) or len(input_shape) != 4
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in input_shape)):
        raise QnasError(f"{where}: input_shape must be [N, C, H, W], got {input_shape!r}")
    seeds = raw.get("seeds", [seed])
    if (not isinstance(seeds, list) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise QnasError(f"{where}: seeds must be a non-empty list of non-negative integers")
    train = own_settings(mapping(raw, "train", where), RETRAIN_OWN - {"epochs"}, where,
                          "train")
    train = from_dict(RetrainConfig, {**train, "data": data, "seed": seeds[0],
                                      "resolution": size}, f"{where}: train")
    return AblationSettings(data=data, resolution=size, width=width, depths=list(depths),
                            expansion=expansion, kernels=list(kernels), devices=devices,
                            input_shape=list(input_shape), train=train, seeds=list(seeds))
