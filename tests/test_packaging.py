"""The wheel carries the YAML data and gives a working `qnas` outside the source tree."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True)
    (path,) = out.glob("qnas-*.whl")
    return path


def test_wheel_contains_yaml_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped_spaces = {p.name for p in (ROOT / "search_spaces").glob("*.yaml")}
    shipped_predictors = {p.name for p in (ROOT / "predictors").glob("*.yaml")}
    assert shipped_spaces and {n.rsplit("/", 1)[-1] for n in names
                               if n.startswith("qnas/_data/search_spaces/")} >= shipped_spaces
    assert {n.rsplit("/", 1)[-1] for n in names
            if n.startswith("qnas/_data/predictors/")} >= shipped_predictors
    experiments = {p.name for p in (ROOT / "experiments").glob("*.yaml")}
    assert experiments and {n.rsplit("/", 1)[-1] for n in names
                            if n.startswith("qnas/_data/experiments/")} == experiments
    assert not [n for n in names if "/results/" in n]      # reports stay in the repository


def test_installed_wheel_runs_from_any_directory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import qnas, qnas.resources as r; "
             "print(qnas.__file__); print(r.data_dir('search_spaces'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(str(target)), out  # the installed copy, not the source tree
    assert out[1].startswith(str(target)) and Path(out[1], "quadranet.yaml").exists()
    cli = subprocess.run([sys.executable, "-m", "qnas", "models"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert "quadranet_t" in cli.stdout


# the import name of each declared dependency (where it differs from the distribution name)
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "nn-meter": "nn_meter"}
# declared for a reason other than an import in qnas/
NOT_IMPORTED = {"setuptools": "nn-meter 2.0 imports pkg_resources, removed in setuptools 81"}


def _declared() -> set[str]:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower()
            for spec in project["dependencies"]}


def _imported() -> set[str]:
    import ast

    names = set()
    for path in (ROOT / "qnas").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_declared_and_every_dependency_used():
    import sys

    imported = _imported() - set(sys.stdlib_module_names) - {"qnas", "__future__"}
    declared = _declared()
    provided = {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in declared}
    optional = {"tensorboard", "litert_torch", "ai_edge_litert", "tflite_runtime", "onnx2torch"}
    assert imported - provided - optional == set(), "imported but not declared in pyproject.toml"
    unused = {name for name in declared
              if IMPORT_NAMES.get(name, name.replace("-", "_")) not in imported}
    assert unused <= set(NOT_IMPORTED), f"declared but never imported: {unused - set(NOT_IMPORTED)}"
