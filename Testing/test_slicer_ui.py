"""The Slicer extension's layout: .ui objects used by the modules, CMake file lists, icons (no Slicer needed)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("ICHSegmentation", "ICHTraining")
#: Widget classes Qt itself provides; anything else in a .ui must be declared in <customwidgets>.
QT_CLASSES = {
    "QWidget",
    "QLabel",
    "QComboBox",
    "QPushButton",
    "QProgressBar",
    "QPlainTextEdit",
    "QCheckBox",
    "QLineEdit",
    "QSpinBox",
    "QDoubleSpinBox",
    "QFrame",
    "QGroupBox",
    "QTableView",
    "QTableWidget",
}


def ui_file(module: str) -> Path:
    return ROOT / module / "Resources" / "UI" / f"{module}.ui"


def ui_object_names(path: Path) -> set[str]:
    tree = ET.parse(path)
    return {
        element.get("name")
        for element in tree.iter()
        if element.tag in ("widget", "layout", "spacer", "action") and element.get("name")
    }


def used_ui_names(module: str) -> set[str]:
    source = (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    return set(re.findall(r"\bself\.ui\.(\w+)", source))


@pytest.mark.parametrize("module", MODULES)
def test_module_files_parse(module):
    for path in [ROOT / module / f"{module}.py", *sorted((ROOT / module / f"{module}Lib").glob("*.py"))]:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_used_exists_in_the_ui_file(module):
    used = used_ui_names(module)
    path = ui_file(module)
    if not path.exists():
        assert not used, f"{module}.py uses self.ui.{sorted(used)} but has no {path.relative_to(ROOT)}"
        return
    missing = used - ui_object_names(path)
    assert not missing, f"{module}.py uses self.ui.<name> not in {path.name}: {sorted(missing)}"


def test_segmentation_ui_has_the_panel():
    names = ui_object_names(ui_file("ICHSegmentation"))
    for name in (
        "inputVolumeSelector",
        "modelSelector",
        "deviceComboBox",
        "qualityComboBox",
        "segmentButton",
        "progressBar",
        "logCollapsibleButton",
        "logTextEdit",
        "outputSegmentationSelector",
        "importLabelmapButton",
        "volumesTableView",
        "exportCsvButton",
        "saveTrainingCaseButton",
    ):
        assert name in names
    assert "updateVolumesButton" in used_ui_names("ICHSegmentation")


def test_ui_classes_declared_and_parameters_exist():
    path = ui_file("ICHSegmentation")
    tree = ET.parse(path)
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    for widget in tree.iter("widget"):
        assert widget.get("class") in QT_CLASSES | declared, f"undeclared widget class {widget.get('class')}"
    assert {"qMRMLNodeComboBox", "ctkCollapsibleButton", "qMRMLTableView", "qMRMLWidget"} <= declared
    kinds = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    assert kinds["logCollapsibleButton"] == "ctkCollapsibleButton" and kinds["logTextEdit"] == "QPlainTextEdit"
    assert kinds["inputVolumeSelector"] == kinds["outputSegmentationSelector"] == "qMRMLNodeComboBox"

    # Every "SlicerParameterName" names a field of the parameter node wrapper class.
    bound = {
        prop.findtext("string")
        for prop in tree.iter("property")
        if prop.get("name") == "SlicerParameterName"
    }  # fmt: skip
    module = ast.parse((ROOT / "ICHSegmentation" / "ICHSegmentation.py").read_text(encoding="utf-8"))
    wrapper = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "ICHSegmentationParameterNode")
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    assert bound and bound <= fields, f"bound {sorted(bound)} vs parameters {sorted(fields)}"
    # Each scene-connected widget gets the scene from the top widget.
    receivers = {c.findtext("receiver") for c in tree.iter("connection") if c.findtext("slot").startswith("setMRML")}
    assert receivers == {"inputVolumeSelector", "outputSegmentationSelector", "volumesTableView"}


def cmake_list(text: str, variable: str, module: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [item.replace("${MODULE_NAME}", module) for item in match.group(1).split()]


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_every_lib_file_and_resource(module):
    folder = ROOT / module
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    on_disk_scripts = {f"{module}.py"} | {
        p.relative_to(folder).as_posix()
        for p in (folder / f"{module}Lib").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    on_disk_resources = {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file()}
    assert set(scripts) == on_disk_scripts
    assert set(resources) == on_disk_resources
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources))
    assert "slicerMacroBuildScriptedModule" in text
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{MODULE_NAME\}\.py\s*\)", text)
    assert f"Resources/Icons/{module}.png" in [r.replace("${MODULE_NAME}", module) for r in resources]


def test_top_level_cmake_is_a_slicer_extension():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for needle in (
        "cmake_minimum_required(",
        "project(ICHSegmentation)",
        'set(EXTENSION_CATEGORY "Segmentation")',
        'set(EXTENSION_DEPENDS "PyTorch")',
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(ICHSegmentation)",
        "add_subdirectory(ICHTraining)",
        "ctkMacroCompilePythonScript(",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert needle in text, needle
    for variable in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "STATUS"):
        assert re.search(rf"set\(EXTENSION_{variable} ", text), variable


def test_icons_are_real_pngs():
    image_module = pytest.importorskip("PIL.Image")
    for module in MODULES:
        with image_module.open(ROOT / module / "Resources" / "Icons" / f"{module}.png") as image:
            image.load()
            assert image.format == "PNG"
            assert 32 <= image.width <= 256 and image.width == image.height
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16)) > 8  # a picture, not a flat square


STUB_CONFIG = """
set(Slicer_FOUND TRUE)
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Nothing.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Nothing.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(BUILD_TESTING ON)
"""
STUB_USE = """
function(_record kind name files)
  foreach(f ${files})
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "${name}: listed file does not exist: ${f}")
    endif()
    file(APPEND ${CMAKE_BINARY_DIR}/report.txt "${kind}|${name}|${f}\\n")
  endforeach()
endfunction()
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  _record(script ${MY_NAME} "${MY_SCRIPTS}")
  _record(resource ${MY_NAME} "${MY_RESOURCES}")
endfunction()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  _record(unittest unittest "${MY_SCRIPT}")
endfunction()
function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT MY_DESTINATION_DIR MATCHES "qt-scripted-modules$" OR NOT MY_INSTALL_DIR MATCHES "qt-scripted-modules$")
    message(FATAL_ERROR "${MY_TARGET_NAME} is not installed next to the scripted modules")
  endif()
  _record(script ${MY_TARGET_NAME} "${MY_SCRIPTS}")
  _record(resource ${MY_TARGET_NAME} "${MY_RESOURCES}")
endfunction()
"""


def test_extension_configures_with_stub_slicer(tmp_path):
    """Configure the real CMakeLists.txt against stand-in Slicer macros that check and record the file lists."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    stub = tmp_path / "SlicerStub"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_CONFIG)
    (stub / "UseSlicer.cmake").write_text(STUB_USE)
    (stub / "Nothing.cmake").write_text("")
    build = tmp_path / "build"
    result = subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}", "-DCMAKE_C_COMPILER_WORKS=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0 and "No CMAKE_C_COMPILER could be found" in result.stderr:
        pytest.skip("no C/C++ compiler for CMake's project() checks")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split("|") for line in (build / "report.txt").read_text().splitlines()]
    recorded = {(kind, name, f) for kind, name, f in rows}
    core = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ichseg").rglob("*.py") if "__pycache__" not in p.parts}
    assert {f for kind, name, f in recorded if kind == "script" and name == "ichseg"} == core
    assert ("resource", "ichseg", "ichseg/py.typed") in recorded
    shipped = {f for kind, name, f in recorded if kind == "resource" and name == "ichseg"}
    for p in (ROOT / "Resources").rglob("*") if (ROOT / "Resources").is_dir() else []:
        relative = p.relative_to(ROOT).as_posix()
        if p.is_file() and not relative.startswith("Resources/Screenshots/"):
            assert relative in shipped, f"{relative} is not shipped with the extension"
    for module in MODULES:
        assert ("unittest", "unittest", f"{module}.py") in recorded
        assert ("script", module, f"{module}.py") in recorded


def test_quality_choices_agree_everywhere():
    """The panel's combo box, the parameter default, the Slicer Lib, the batch script and the CLI."""
    import sys

    sys.path.insert(0, str(ROOT / "ICHSegmentation"))
    try:
        from ICHSegmentationLib.batch import build_parser
        from ICHSegmentationLib.process import QUALITIES
    finally:
        sys.path.remove(str(ROOT / "ICHSegmentation"))
    from ichseg.commands.segment import QUALITY_CHOICES
    from ichseg.infer import QUALITY_CHOICES as INFER_CHOICES

    assert QUALITIES == QUALITY_CHOICES == INFER_CHOICES and QUALITIES[0] == "auto"
    tree = ET.parse(ui_file("ICHSegmentation"))
    combo = next(w for w in tree.iter("widget") if w.get("name") == "qualityComboBox")
    assert [item.findtext("property/string") for item in combo.findall("item")] == list(QUALITIES)
    source = (ROOT / "ICHSegmentation" / "ICHSegmentation.py").read_text(encoding="utf-8")
    assert re.search(r'quality: Annotated\[str, Choice\(list\(QUALITIES\)\)\] = "auto"', source)
    action = next(a for a in build_parser()._actions if a.dest == "quality")
    assert tuple(action.choices) == QUALITIES and action.default == "auto"
