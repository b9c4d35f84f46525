"""Value checks shared by the experiment kinds (one line naming the file and the key)."""
from __future__ import annotations

from ..data import check_spec
from ..errors import QnasError
from ..nas.config import SearchConfig
from ..predictors.devices import device_info
from ..settings import default_of

# SearchConfig fields an experiment sets itself (not under ``search:``)
SEARCH_OWN = {"device", "latency", "space", "data", "resolution", "seed", "supernet",
               "lut_cache_dir"}
# RetrainConfig fields an experiment sets itself (not under ``retrain:`` / ``train:``)
RETRAIN_OWN = {"data", "resolution", "seed", "init", "epochs"}


def check_int(value, name: str, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise QnasError(f"{where}: {name} must be an integer ≥ {low}, got {value!r}")
    return value


def mapping(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise QnasError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    return dict(value)


def data_spec(raw: dict, where: str) -> str:
    value = raw.get("data", default_of(SearchConfig, "data"))
    try:
        check_spec(value)
    except QnasError as err:
        raise QnasError(f"{where}: {err}") from None
    return value


def device_name(value, where: str, context: str) -> str:
    if not isinstance(value, str):
        raise QnasError(f"{where}: {context}: device must be a name, got {value!r}")
    try:
        return device_info(value).name
    except QnasError as err:
        raise QnasError(f"{where}: {context}: {err}") from None


def own_settings(section: dict, own: set[str], where: str, name: str) -> dict:
    """A ``search:`` / ``retrain:`` / ``train:`` section, refusing the settings the experiment
    sets itself (data, resolution, seed, …)."""
    clash = sorted(set(section) & own)
    if clash:
        raise QnasError(f"{where}: {name}.{clash[0]} is set by the experiment itself (its "
                        f"top-level keys or targets), not under '{name}:'")
    return section


def resolution(raw: dict, where: str) -> int:
    return check_int(raw.get("resolution", 32), "resolution", where, low=8)
