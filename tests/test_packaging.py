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
