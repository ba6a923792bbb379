"""The built wheel is a working package (issue 15): it holds the preset configs and the licence,
installs into a fresh virtual environment without the network, and there ``adapmtl --help``,
``adapmtl config list`` and a tiny ``train`` from a packaged preset run, away from any clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = [
    "train.iterations=2",
    "train.val_every=2",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "data.train_options.n=4",
    "data.val_options.n=2",
    "data.train_options.size=[32,32]",
    "data.val_options.size=[32,32]",
]


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_the_wheel_installs_and_trains_from_a_packaged_preset(tmp_path):
    # build from a copy of the sources, so the working tree gets no build/ or egg-info
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    wheels = tmp_path / "dist"
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
         str(tree)], tmp_path, env)  # fmt: skip
    (wheel,) = wheels.glob("adapmtl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    presets = sorted(p.relative_to(ROOT / "configs").as_posix() for p in
                     (ROOT / "configs").rglob("*.yaml"))  # fmt: skip
    assert presets and all(f"adapmtl/configs/{p}" in names for p in presets)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    # a fresh environment that sees the installed torch (and the other dependencies) through
    # a .pth file, not this checkout: the package comes from the wheel alone
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
               tmp_path, env).stdout.strip()  # fmt: skip
    deps = Path(torch.__file__).resolve().parents[1]
    assert deps == Path(sysconfig.get_path("purelib")).resolve()
    (Path(site) / "deps.pth").write_text(f"{deps}\n")
    run([*pip, "--python", str(python), "install", "--no-index", str(wheel)], tmp_path, env)

    work = tmp_path / "work"  # no configs/ here: presets must come from the package
    work.mkdir()
    where = run([str(python), "-c", "import adapmtl; print(adapmtl.__file__)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(venv)
    adapmtl = str(venv / "bin" / "adapmtl")
    assert "train" in run([adapmtl, "--help"], work, env).stdout
    listing = run([adapmtl, "config", "list"], work, env).stdout
    assert "nyuv2/resnet34_adapmtl" in listing and "suites/scenes_cpu" in listing
    sets = [arg for item in TINY_TRAIN for arg in ("--set", item)]
    run([adapmtl, "train", "--config", "scenes/dense_cpu", "--out", "run", "--quiet", *sets],
        work, env)  # fmt: skip
    assert (work / "run" / "results.json").is_file()
    assert (work / "run" / "last.pt").is_file()
