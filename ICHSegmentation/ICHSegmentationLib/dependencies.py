"""First-run Python dependencies of the extension inside Slicer's Python.

torch comes through Slicer's PyTorch extension (PyTorchUtils picks the CPU or CUDA build
for the machine); the rest are pip requirements pinned as in ``pyproject.toml`` (a test
keeps them equal).  Everything that installs is passed in, so this runs without Slicer;
:func:`ensure_in_slicer` passes Slicer's installers.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable

__all__ = [
    "REQUIREMENTS",
    "TORCH_REQUIREMENT",
    "ensure_dependencies",
    "ensure_in_slicer",
    "missing_requirements",
    "torch_missing",
]

#: import name -> pip requirement (the same pins as pyproject.toml's dependencies).
REQUIREMENTS: dict[str, str] = {
    "monai": "monai==1.6.1",
    "SimpleITK": "SimpleITK==2.5.7",
    "numpy": "numpy>=1.26,<3",
    "scipy": "scipy>=1.11",
    "nrrd": "pynrrd==1.1.3",
    "slicerio": "slicerio==1.4.0",
    "PIL": "pillow>=10",
    "matplotlib": "matplotlib>=3.8",
    "psutil": "psutil>=5.9",
}
#: Any recent torch works for inference and fine-tuning; PyTorchUtils installs the build for the GPU.
TORCH_REQUIREMENT = ">=2.4"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(installed: Callable[[str], bool] = _installed) -> list[str]:
    """pip requirements whose package cannot be imported (torch excluded)."""
    return [requirement for name, requirement in REQUIREMENTS.items() if not installed(name)]


def torch_missing(installed: Callable[[str], bool] = _installed) -> bool:
    return not installed("torch")


def ensure_dependencies(
    pip_install: Callable[[list[str]], None],
    install_torch: Callable[[str], bool],
    confirm: Callable[[str], bool] = lambda message: True,
    installed: Callable[[str], bool] = _installed,
) -> list[str]:
    """Install what is missing; returns what was installed ([] when nothing was needed).

    ``install_torch(requirement)`` returns False when torch could not be installed;
    ``confirm(message)`` may refuse (a dialog in Slicer, always yes without a main window).
    Raises RuntimeError with a message that says what to do.
    """
    requirements = missing_requirements(installed)
    need_torch = torch_missing(installed)
    if not requirements and not need_torch:
        return []
    wanted = (["torch (through the PyTorch extension)"] if need_torch else []) + requirements
    if not confirm("ICH Segmentation needs these Python packages, which will be installed now:\n" + "\n".join(wanted)):
        raise RuntimeError("Required Python packages are missing: " + ", ".join(wanted))
    if need_torch and not install_torch(TORCH_REQUIREMENT):
        raise RuntimeError(
            "PyTorch is not installed. Install the 'PyTorch' extension from the Extensions Manager, "
            "restart Slicer, then install torch from its module (PyTorch Utils)."
        )
    if requirements:
        pip_install(requirements)
    importlib.invalidate_caches()
    still = missing_requirements(installed) + (["torch"] if torch_missing(installed) else [])
    if still:
        raise RuntimeError("Installation did not make these importable: " + ", ".join(still))
    return wanted


def ensure_in_slicer() -> None:
    """In Slicer: install missing packages (torch through PyTorchUtils); ask first when there is a main window."""
    import slicer

    interactive = slicer.util.mainWindow() is not None

    def install_torch(requirement: str) -> bool:
        try:
            import PyTorchUtils
        except ImportError:
            return False
        logic = PyTorchUtils.PyTorchUtilsLogic()
        return logic.installTorch(askConfirmation=interactive, torchVersionRequirement=requirement) is not None

    def confirm(message: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(message) if interactive else True

    installed = ensure_dependencies(slicer.util.pip_install, install_torch, confirm)
    if installed:
        logging.info("Installed: " + ", ".join(installed))
