"""Load nn-Meter's scikit-learn 0.23 kernel-predictor pickles on a current scikit-learn.

nn-Meter's published predictors are ``RandomForestRegressor`` pickles written by
scikit-learn 0.23.1. scikit-learn >= 1.3 refuses them ("node array from the pickle has an
incompatible dtype", nn-Meter issue #131) because every tree node gained a
``missing_go_to_left`` byte, and the estimators' attributes were renamed over the years
(``base_estimator`` -> ``estimator``, ``n_features_`` -> ``n_features_in_``, criterion
``"mse"`` -> ``"squared_error"``, ...).

:func:`load` unpickles such a file with :class:`CompatUnpickler`, which

* rebuilds each tree's node array in the current layout, with ``missing_go_to_left = 0``
  (0.23 had no missing-value support, so no node ever sends missing values left), and
* renames/fills the estimator attributes that current ``predict``/``get_params`` read.

Thresholds, children, features and leaf values are copied bit for bit, so predictions are
identical to the ones scikit-learn 0.23 made. Pickles already in the current layout load
unchanged.
"""
from __future__ import annotations

import inspect
import io
import pickle
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# modules that moved between scikit-learn / numpy releases (old path -> current path)
_MODULE_ALIASES = {
    "sklearn.ensemble.forest": "sklearn.ensemble._forest",
    "sklearn.ensemble.base": "sklearn.ensemble._base",
    "sklearn.tree.tree": "sklearn.tree._classes",
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
    "numpy.core._multiarray_umath": "numpy._core._multiarray_umath",
}

# estimator attributes renamed since scikit-learn 0.23 (old name -> current name)
_RENAMED_ATTRIBUTES = {
    "base_estimator": "estimator",
    "base_estimator_": "estimator_",
    "n_features_": "n_features_in_",
}
# attributes that no longer exist (their values had no effect on prediction)
_REMOVED_ATTRIBUTES = ("min_impurity_split", "presort")
_RENAMED_CRITERIA = {"mse": "squared_error", "mae": "absolute_error"}


def _tree_class():
    from sklearn.tree._tree import Tree

    return Tree


def upgrade_node_array(nodes: np.ndarray) -> np.ndarray:
    """Return ``nodes`` in the node dtype of the installed scikit-learn.

    Fields the old array lacks (``missing_go_to_left``) are zero; all others are copied.
    """
    from sklearn.tree._tree import NODE_DTYPE

    if nodes.dtype == NODE_DTYPE:
        return nodes
    missing_in_current = set(nodes.dtype.names) - set(NODE_DTYPE.names)
    if missing_in_current:
        raise ValueError(f"tree node array has fields {sorted(missing_in_current)} that this "
                         f"scikit-learn does not know; cannot convert it")
    upgraded = np.zeros(nodes.shape, dtype=NODE_DTYPE)
    for name in nodes.dtype.names:
        upgraded[name] = nodes[name]
    return upgraded


def _make_legacy_tree_class():
    Tree = _tree_class()

    class _LegacyTree(Tree):
        """A Tree whose ``__setstate__`` first converts an old node array.

        Only lives during unpickling: :func:`_finalize` swaps every instance for a plain Tree.
        """

        def __setstate__(self, state):
            state = dict(state)
            state["nodes"] = upgrade_node_array(np.asarray(state["nodes"]))
            super().__setstate__(state)

    return _LegacyTree


class CompatUnpickler(pickle.Unpickler):
    """An unpickler that maps moved modules and old tree layouts to the installed versions."""

    def __init__(self, file: BinaryIO, **kwargs):
        super().__init__(file, **kwargs)
        self._legacy_tree = _make_legacy_tree_class()

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        if module == "sklearn.tree._tree" and name == "Tree":
            return self._legacy_tree
        return super().find_class(module, name)


def _plain_tree(tree):
    """A real ``sklearn.tree._tree.Tree`` with the same state as ``tree`` (a _LegacyTree)."""
    Tree = _tree_class()
    if type(tree) is Tree:
        return tree
    cls_, args, state = tree.__reduce__()
    fresh = Tree(*args)
    fresh.__setstate__(state)
    return fresh


def _upgrade_estimator(est) -> None:
    """Rename/fill attributes in place so current scikit-learn can predict and describe it."""
    from sklearn.base import BaseEstimator

    attrs = est.__dict__
    for old, new in _RENAMED_ATTRIBUTES.items():
        if old in attrs:
            value = attrs.pop(old)
            attrs.setdefault(new, value)
    for old in _REMOVED_ATTRIBUTES:
        attrs.pop(old, None)
    if attrs.get("criterion") in _RENAMED_CRITERIA:
        attrs["criterion"] = _RENAMED_CRITERIA[attrs["criterion"]]
    if attrs.get("max_features") == "auto":
        # "auto" meant all features for regressors and sqrt for classifiers
        from sklearn.base import is_classifier

        attrs["max_features"] = "sqrt" if is_classifier(est) else 1.0
    # parameters introduced after 0.23 (e.g. monotonic_cst): their defaults, which is what
    # an old model behaves like
    signature = inspect.signature(type(est).__init__)
    for pname, param in signature.parameters.items():
        if pname != "self" and param.default is not inspect.Parameter.empty \
                and pname not in attrs:
            attrs[pname] = param.default
    if "estimator_params" in attrs:
        # the tuple of parameters forwarded to sub-estimators changed with the renames
        try:
            attrs["estimator_params"] = type(est)().estimator_params
        except Exception:  # noqa: BLE001 -- keep the pickled tuple if the class cannot say
            pass
    if "tree_" in attrs:
        attrs["tree_"] = _plain_tree(attrs["tree_"])
    for key in ("estimator", "estimator_"):
        if isinstance(attrs.get(key), BaseEstimator):
            _upgrade_estimator(attrs[key])
    for sub in attrs.get("estimators_", None) or []:
        if isinstance(sub, BaseEstimator):
            _upgrade_estimator(sub)


def _finalize(obj: Any) -> Any:
    from sklearn.base import BaseEstimator

    if isinstance(obj, BaseEstimator):
        _upgrade_estimator(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _finalize(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _finalize(value)
    return obj


def load(file: BinaryIO) -> Any:
    """``pickle.load`` replacement that reads scikit-learn 0.23-era estimator pickles."""
    with warnings.catch_warnings():
        # "Trying to unpickle estimator ... from version 0.23.1": the point of this module
        warnings.filterwarnings("ignore", message=".*unpickle estimator.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            from sklearn.exceptions import InconsistentVersionWarning
            warnings.filterwarnings("ignore", category=InconsistentVersionWarning)
        except ImportError:  # scikit-learn < 1.3
            pass
        return _finalize(CompatUnpickler(file).load())


def loads(data: bytes) -> Any:
    return load(io.BytesIO(data))


def load_path(path: str | Path) -> Any:
    with open(path, "rb") as handle:
        return load(handle)


class _PickleModuleShim:
    """Stands in for the ``pickle`` module inside nn-Meter's loader (only ``load`` differs)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)

    @staticmethod
    def load(file: BinaryIO, **_kwargs) -> Any:
        return load(file)


PICKLE_SHIM = _PickleModuleShim()
