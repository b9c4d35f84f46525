"""nn-Meter's files, offline: where nn-Meter keeps its predictors, which one serves a qnas
device, installing published predictor files, registering built ones, and importing nn_meter
quietly with downloads refused.

Where nn-Meter keeps things (nn-Meter 2.0, ``nn_meter/predictor/utils.py``):
``~/.nn_meter/config/predictors.yaml`` lists predictors (copied from the package on first use;
``nn-meter register --predictor meta.yaml`` appends an entry). A *built-in* entry (it has a
``download`` URL) is read from ``<data_folder>/predictor/<name>/`` (``data_folder`` from
``~/.nn_meter/config/settings.yaml``, default ``~/.nn_meter/data``) and must hold one
``<kernel>.pkl`` per listed kernel predictor plus ``fusion_rules.json``; a *registered* entry is
read from its ``package_location``.

qnas device → nn-Meter predictor: the four published devices map through
``predictors/devices.yaml`` (cortexA76 → cortexA76cpu_tflite21, …); ``host-cpu``/``host-cuda``
map to the predictors ``qnas predictor build`` registers (``qnas_host_cpu``/``qnas_host_cuda``),
which count only on the CPU (GPU) they were measured on; any registered nn-Meter predictor can
also be named directly.

**No downloads, ever**: a device's nn-Meter predictor is used only when its files are already
on disk (``qnas predictor install-nnmeter PATH`` puts them there from a local zip or folder),
and nn-Meter's downloader is replaced by one that refuses. nn-Meter's kernel predictors are
scikit-learn 0.23 pickles; its loader is patched to read them through
:mod:`qnas.predictors.sklearn_compat`.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import QnasError
from ..runtime.files import staged_folder
from . import sklearn_compat
from .devices import device_table
from .measured import cpu_model

# predictors built and registered by `qnas predictor build` for the host devices
HOST_PREDICTOR_NAMES = {"host-cpu": "qnas_host_cpu", "host-cuda": "qnas_host_cuda"}
NNMETER_RELEASE_URL = "https://github.com/microsoft/nn-Meter/releases/tag/v1.0-data"
LOGGER_NAME = "nn-Meter"


# --- where nn-Meter keeps its files -----------------------------------------------------------
def _nn_meter_package_dir() -> Path | None:
    spec = importlib.util.find_spec("nn_meter")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def user_config_folder() -> Path:
    """``~/.nn_meter/config`` — the one nn-Meter uses (fixed when nn_meter is imported)."""
    module = sys.modules.get("nn_meter.predictor.utils")
    if module is not None:
        return Path(module.__user_config_folder__)
    return Path(os.path.expanduser("~/.nn_meter/config"))


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        return None
    except yaml.YAMLError as err:
        raise QnasError(f"nn-Meter config {path} is not valid YAML ({str(err).splitlines()[0]}); "
                        f"fix or delete it (nn-Meter recreates it)") from None


def predictor_configs() -> list[dict]:
    """nn-Meter's predictor list: the user's copy, or the package's before first use."""
    configs = _read_yaml(user_config_folder() / "predictors.yaml")
    if configs is None:
        package = _nn_meter_package_dir()
        configs = _read_yaml(package / "configs" / "predictors.yaml") if package else None
    return [c for c in (configs or []) if isinstance(c, dict) and "name" in c]


def data_folder() -> Path:
    """nn-Meter's data folder (``settings.yaml``; default ``~/.nn_meter/data``)."""
    settings = _read_yaml(user_config_folder() / "settings.yaml")
    if isinstance(settings, dict) and settings.get("data_folder"):
        return Path(settings["data_folder"])
    return user_config_folder().parent / "data"


def builtin_predictor_folder(name: str) -> Path:
    """Where nn-Meter looks for the files of built-in predictor ``name``."""
    return data_folder() / "predictor" / name


def _version_key(value: Any):
    from packaging import version  # deferred: only nn-Meter's file lookup needs it

    try:
        return version.parse(str(value))
    except version.InvalidVersion:
        return version.parse("0")


# --- device -> nn-Meter predictor -------------------------------------------------------------
def device_map() -> dict[str, str]:
    """qnas device → nn-Meter predictor name (``predictors/devices.yaml``)."""
    return {info.name: info.nnmeter_predictor for info in device_table()
            if info.nnmeter_predictor}


def nnmeter_predictor_name(device: str) -> str | None:
    """The nn-Meter predictor that serves qnas ``device`` (None: nn-Meter has none)."""
    if device in HOST_PREDICTOR_NAMES:
        return HOST_PREDICTOR_NAMES[device]
    mapping = device_map()
    if device in mapping:
        return mapping[device]
    if any(c["name"] == device for c in predictor_configs()):
        return device
    return None


def host_fingerprint(device: str) -> str:
    """What a host predictor must match to count on this machine: the CPU (or GPU) model."""
    if device == "host-cuda":
        return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA GPU"
    return cpu_model()


@dataclass
class NNMeterFiles:
    """What is on disk for one device's nn-Meter predictor."""

    device: str
    name: str | None
    version: Any = None
    folder: Path | None = None
    kernel_predictors: list[str] = field(default_factory=list)
    builtin: bool = False
    info: dict = field(default_factory=dict)
    problem: str = ""              # empty when usable

    @property
    def available(self) -> bool:
        return not self.problem


def nnmeter_files(device: str) -> NNMeterFiles:
    """Find ``device``'s nn-Meter predictor files without importing nn-Meter or downloading."""
    name = nnmeter_predictor_name(device)
    if name is None:
        return NNMeterFiles(device, None, problem="nn-Meter has no predictor for this device")
    entries = [c for c in predictor_configs() if c["name"] == name]
    if not entries:
        how = ("it is not registered" if device in HOST_PREDICTOR_NAMES
               else "nn-Meter's predictors.yaml does not list it")
        return NNMeterFiles(device, name, problem=how)
    info = max(entries, key=lambda c: _version_key(c.get("version")))
    kernels = [str(k) for k in info.get("kernel_predictors") or []]
    builtin = "download" in info
    folder = builtin_predictor_folder(name) if builtin else Path(info.get("package_location", ""))
    files = NNMeterFiles(device, name, info.get("version"), folder, kernels, builtin, info)
    missing = [f"{k}.pkl" for k in kernels if not (folder / f"{k}.pkl").is_file()]
    if not (folder / "fusion_rules.json").is_file():
        missing.append("fusion_rules.json")
    if not folder.is_dir():
        files.problem = f"its folder {folder} does not exist"
    elif missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        files.problem = f"{folder} lacks {shown}"
    elif device in HOST_PREDICTOR_NAMES:
        built_on = (info.get("qnas") or {}).get("host")
        here = host_fingerprint(device)
        if built_on != here:
            files.problem = f"it was built on '{built_on}', this host is '{here}'"
    return files


def nnmeter_available(device: str) -> bool:
    """True when ``device``'s nn-Meter predictor files are on disk (nothing is imported)."""
    try:
        return nnmeter_files(device).available
    except QnasError:
        return False


def fallback_backend(device: str) -> str:
    if device in HOST_PREDICTOR_NAMES:
        return f"qnas measures on this host instead (MeasuredPredictor('{device}'))"
    return f"qnas uses its calibrated profile for {device} instead (source 'profile')"


def missing_message(device: str, files: NNMeterFiles | None = None) -> str:
    """One line: what is missing, how to install it, which backend is used meanwhile."""
    files = files or nnmeter_files(device)
    if files.name is None:
        known = ", ".join(sorted({*device_map(), *HOST_PREDICTOR_NAMES}))
        return (f"nn-Meter has no predictor for device '{device}' (devices with one: {known}; "
                f"or build one for this host with 'qnas predictor build --device host-cpu'); "
                f"{fallback_backend(device)}")
    if device in HOST_PREDICTOR_NAMES:
        how = (f"build it with 'qnas predictor build --device {device}' (or install a copy with "
               f"'qnas predictor install-nnmeter PATH')")
    else:
        how = (f"install its files with 'qnas predictor install-nnmeter PATH', PATH being "
               f"{files.name}.zip from {NNMETER_RELEASE_URL} or its unpacked folder (qnas never "
               f"downloads)")
    return (f"nn-Meter predictor '{files.name}' for {device} is not usable: {files.problem}; "
            f"{how}; {fallback_backend(device)}")


# --- installing published predictor files -----------------------------------------------------
def _looks_like_predictor(folder: Path) -> bool:
    return folder.is_dir() and (folder / "fusion_rules.json").is_file() \
        and any(folder.glob("*.pkl"))


def _find_predictor_folders(root: Path, default_name: str) -> dict[str, Path]:
    """Predictor folders under ``root``: ``root`` itself or its sub-folders (as in the zips)."""
    if _looks_like_predictor(root):
        return {default_name: root}
    found = {}
    for sub in sorted(p for p in root.rglob("*") if p.is_dir()):
        if _looks_like_predictor(sub) and not sub.name.startswith((".", "__MACOSX")):
            found.setdefault(sub.name, sub)
    return found


def install_nnmeter_predictors(path: str | Path, name: str | None = None) -> list[Path]:
    """Install nn-Meter predictor files from a local zip or folder (no download).

    ``path`` is a zip from nn-Meter's release page (``cortexA76cpu_tflite21.zip`` holds the
    folder ``cortexA76cpu_tflite21/``) or a folder holding such predictor folders, or one
    predictor folder itself (``*.pkl`` + ``fusion_rules.json``; its name, or ``name``, says
    which predictor it is). Each predictor goes to ``<data_folder>/predictor/<name>/``, where
    nn-Meter looks for it, replacing an earlier copy atomically. Returns the installed folders.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise QnasError(f"{source} does not exist; pass a predictor zip such as "
                        f"cortexA76cpu_tflite21.zip or a folder holding *.pkl + fusion_rules.json")
    known = {c["name"]: c for c in predictor_configs()}
    with tempfile.TemporaryDirectory(prefix="qnas-nnmeter-") as scratch:
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise QnasError(f"{source} is not a zip file; pass nn-Meter's predictor zip or "
                                f"a folder holding *.pkl + fusion_rules.json")
            with zipfile.ZipFile(source) as archive:
                root = Path(scratch) / "unpacked"
                for member in archive.namelist():
                    target = (root / member).resolve()
                    if not str(target).startswith(str(root.resolve())):
                        raise QnasError(f"{source} holds an unsafe path {member!r}; refusing it")
                archive.extractall(root)
            default = name or source.stem
        else:
            root = source
            default = name or source.name
        folders = _find_predictor_folders(root, default)
        if not folders:
            raise QnasError(f"no nn-Meter predictor found in {source}: expected a folder with "
                            f"*.pkl kernel predictors and fusion_rules.json")
        if name is not None and len(folders) == 1:
            folders = {name: next(iter(folders.values()))}
        installed = []
        for pred_name, folder in folders.items():
            installed.append(_install_one(pred_name, folder, known))
    return installed


def _install_one(pred_name: str, folder: Path, known: dict[str, dict]) -> Path:
    info = known.get(pred_name)
    if info is None or "download" not in info:
        builtins = ", ".join(n for n, c in known.items() if "download" in c)
        raise QnasError(f"'{pred_name}' is not one of nn-Meter's published predictors "
                        f"({builtins}); name the folder or zip after one, or register your own "
                        f"with 'nn-meter register --predictor meta.yaml'")
    missing = [k for k in info.get("kernel_predictors") or []
               if not (folder / f"{k}.pkl").is_file()]
    if missing:
        raise QnasError(f"{folder} lacks kernel predictors {', '.join(missing)} that nn-Meter "
                        f"needs for {pred_name}; use the complete {pred_name}.zip")
    target = builtin_predictor_folder(pred_name)
    with staged_folder(target) as staging:
        for item in folder.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
    return target


# --- registering a predictor built by qnas ----------------------------------------------------
def _nn_meter_command() -> list[str]:
    script = Path(sys.executable).with_name("nn-meter")
    if script.is_file():
        return [str(script)]
    found = shutil.which("nn-meter")
    if found:
        return [found]
    return [sys.executable, "-c",
            "import sys; from nn_meter.utils.nn_meter_cli.interface import nn_meter_cli; "
            "sys.argv[0] = 'nn-meter'; nn_meter_cli()"]


def run_nn_meter_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real ``nn-meter`` command line (same HOME, so the same ~/.nn_meter)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*_nn_meter_command(), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def register_predictor(meta_path: Path, name: str) -> None:
    """Register with ``nn-meter register --predictor meta.yaml``, replacing an older entry."""
    for _ in range(5):   # nn-Meter's unregister drops one of two adjacent duplicates per call
        if not any(c["name"] == name for c in predictor_configs()):
            break
        run_nn_meter_cli("unregister", "--predictor", name)
    done = run_nn_meter_cli("register", "--predictor", str(meta_path))
    if done.returncode != 0 or not any(c["name"] == name for c in predictor_configs()):
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        raise QnasError(f"'nn-meter register --predictor {meta_path}' did not register '{name}' "
                        f"(exit {done.returncode}: {tail}); check that nn-meter is installed in "
                        f"this environment")


# --- nn-Meter itself: lazy, quiet, never downloading ------------------------------------------
def _refuse_download(url, *_args, **_kwargs):
    raise QnasError(f"nn-Meter tried to download {url}; qnas never downloads — install the "
                    f"files with 'qnas predictor install-nnmeter PATH'")


def import_nn_meter():
    """Import nn_meter quietly and make its predictor loader offline and scikit-learn-1.x safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import nn_meter
        import nn_meter.predictor.utils as loader_utils

    # nn-Meter attaches a stdout handler at INFO; qnas reports what matters itself
    logging.getLogger(LOGGER_NAME).setLevel(logging.ERROR)
    loader_utils.pickle = sklearn_compat.PICKLE_SHIM
    loader_utils.download_from_url = _refuse_download
    dataset = sys.modules.get("nn_meter.dataset.bench_dataset")
    if dataset is not None:
        dataset.download_from_url = _refuse_download
    return nn_meter


def nnmeter_version() -> str:
    try:
        return installed_version("nn-meter")
    except Exception:  # noqa: BLE001
        return "unknown"
