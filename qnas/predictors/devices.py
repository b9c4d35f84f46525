"""The devices qnas knows (``predictors/devices.yaml``): name, kind, profile file and the
nn-Meter predictor that serves it, where nn-Meter has one.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..errors import QnasError
from ..resources import data_dir


@dataclass(frozen=True)
class DeviceInfo:
    """One row of ``predictors/devices.yaml``."""

    name: str
    kind: str                              # "profile" or "measured"
    description: str = ""
    profile: str | None = None             # file name under predictors/
    nnmeter_predictor: str | None = None   # nn-Meter's name for it, where nn-Meter has one
    requires: str | None = None            # "cuda": only listed when a CUDA GPU is visible

    @property
    def profile_path(self) -> Path | None:
        return data_dir("predictors") / self.profile if self.profile else None

    @property
    def available(self) -> bool:
        return self.requires != "cuda" or torch.cuda.is_available()


@functools.lru_cache(maxsize=4)
def _read_device_table(path: str, mtime_ns: int) -> tuple[DeviceInfo, ...]:
    raw = yaml.safe_load(Path(path).read_text())
    entries = (raw or {}).get("devices")
    if not isinstance(entries, list):
        raise QnasError(f"{path} must hold a 'devices:' list")
    fields = set(DeviceInfo.__dataclass_fields__)
    out = []
    for entry in entries:
        unknown = set(entry) - fields
        if unknown or "name" not in entry or entry.get("kind") not in ("profile", "measured"):
            raise QnasError(f"{path}: bad device entry {entry!r}; each needs name, kind "
                            f"(profile or measured) and only the keys {sorted(fields)}")
        out.append(DeviceInfo(**{key: (str(v) if v is not None else None)
                                 for key, v in entry.items()}))
    return tuple(out)


def device_table() -> list[DeviceInfo]:
    """Every device in ``devices.yaml``, including ones this machine cannot serve (host-cuda)."""
    path = data_dir("predictors") / "devices.yaml"
    return list(_read_device_table(str(path), path.stat().st_mtime_ns))


def list_devices() -> list[str]:
    """Names of the devices usable on this machine, in the table's order."""
    return [info.name for info in device_table() if info.available]


def device_info(device: str) -> DeviceInfo:
    """The table entry of ``device`` (names match case-insensitively)."""
    by_name = {info.name.lower(): info for info in device_table()}
    info = by_name.get(str(device).strip().lower())
    if info is None:
        raise QnasError(f"unknown device '{device}'; known devices: {', '.join(list_devices())}")
    if not info.available:
        raise QnasError(f"device '{info.name}' needs a CUDA GPU and torch.cuda.is_available() is "
                        f"False here; use one of: {', '.join(list_devices())}")
    return info
