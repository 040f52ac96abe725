"""First-run dependencies of the Slicer extension: pins equal pyproject.toml; install flow (no Slicer)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "ICHSegmentation") not in sys.path:
    sys.path.insert(0, str(ROOT / "ICHSegmentation"))

from ICHSegmentationLib import dependencies  # noqa: E402


def test_pins_equal_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pinned = {r.replace(" ", "") for r in project["dependencies"] if not r.startswith("torch")}
    assert set(dependencies.REQUIREMENTS.values()) == pinned


def test_installs_only_what_is_missing_torch_first():
    present = {"numpy", "scipy", "SimpleITK", "PIL", "matplotlib", "psutil", "nrrd"}
    calls = []

    def install_torch(requirement):
        calls.append(("torch", requirement))
        present.add("torch")
        return True

    def pip_install(requirements):
        calls.append(("pip", requirements))
        present.update({"monai", "slicerio"})

    done = dependencies.ensure_dependencies(pip_install, install_torch, installed=present.__contains__)
    assert calls == [("torch", dependencies.TORCH_REQUIREMENT), ("pip", ["monai==1.6.1", "slicerio==1.4.0"])]
    assert done[0].startswith("torch") and "monai==1.6.1" in done
    assert dependencies.ensure_dependencies(pip_install, install_torch, installed=present.__contains__) == []


def test_refusal_and_failed_torch_give_clear_errors():
    present = {"torch"}
    with pytest.raises(RuntimeError, match="missing: monai"):
        dependencies.ensure_dependencies(
            lambda r: None, lambda r: True, confirm=lambda m: False, installed=present.__contains__
        )
    with pytest.raises(RuntimeError, match="PyTorch extension|'PyTorch' extension"):
        dependencies.ensure_dependencies(lambda r: None, lambda r: False, installed=set().__contains__)
    with pytest.raises(RuntimeError, match="did not make these importable"):
        dependencies.ensure_dependencies(lambda r: None, lambda r: True, installed=present.__contains__)
