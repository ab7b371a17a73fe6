"""The distribution: one top-level import package, ``corral``, with its data files and the ``corral`` command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .support import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("corral-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {Path(name).parts[0] for name in names if not Path(name).parts[0].endswith(".dist-info")}
    assert tops == {"corral"}
    for module in ("corral/__init__.py", "corral/api/app.py", "corral/worker/__init__.py",
                   "corral/common/store.py", "corral/cli/main.py", "corral/client/__init__.py",
                   "corral/simulator/model.py"):  # fmt: skip
        assert module in names, module


def test_the_wheel_carries_its_data_and_the_command(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    for data in ("corral/py.typed", "corral/api/static/dashboard.html", "corral/cli/redis.conf",
                 "corral/common/lua/lib.lua", "corral/common/lua/enqueue.lua", "corral/api/lua/rate.lua"):  # fmt: skip
        assert data in names, data
    (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "corral = corral.cli:main" in wheel.read(entry_points).decode()
    assert not [n for n in names if n.startswith("corral/tests") or "/bench/" in n]
