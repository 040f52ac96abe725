"""Offscreen render of a slice view (ICHSegmentationLib.render) with real slicer-core and a real GL backend.

A phantom head CT (11 degree gantry tilt) with its ICH/PHE label is imported as segments
and the axial slice through the ICH centroid is rendered with Slicer's own slice logic
and segmentation displayable manager.  Pixels at known RAS points must show the ICH colour
over the bleed, the PHE colour on its rim and a grey that matches the CT (window 0-80 HU)
in normal brain.

OpenGL is probed in a child process first: without a GL backend VTK can crash the
process.  EGL (headless Mesa: ``libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1``, which
``make test`` installs when it runs as root) is asked for unless
``VTK_DEFAULT_OPENGL_WINDOW`` names another window class.  The tests skip only when the
probe cannot render at all.
"""

from __future__ import annotations

import colorsys
import functools
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "ICHSegmentation"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from conftest import import_slicer_core, new_mrml_scene  # noqa: E402

slicer = import_slicer_core()

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402
from ICHSegmentationLib import render, segments  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402
from vtkmodules.util import numpy_support  # noqa: E402

from ichseg import labels  # noqa: E402
from ichseg.phantom import generate_case  # noqa: E402

GL_WINDOW = os.environ.get("VTK_DEFAULT_OPENGL_WINDOW") or "vtkEGLRenderWindow"
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1"
_PROBE = textwrap.dedent(
    """
    import vtk
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(8, 8)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1.0, 0.0, 0.0)
    window.AddRenderer(renderer)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    print(window.GetClassName(), grab.GetOutput().GetScalarComponentAsDouble(4, 4, 0, 0))
    """
)
SEED, KIND, THICKNESS, MATRIX = 5, "ich_phe", 5.0, 256  # a tilted scan with a large ICH and PHE


@functools.cache
def gl_problem() -> str | None:
    """Why offscreen OpenGL cannot be used here, or None when a child process could render."""
    env = {**os.environ, "VTK_DEFAULT_OPENGL_WINDOW": GL_WINDOW}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=180, check=False
        )
    except subprocess.TimeoutExpired:
        return f"no usable OpenGL backend: the {GL_WINDOW} probe hung for 180 s"
    if proc.returncode != 0:
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited {proc.returncode}"
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).split("| ")[-1].strip() for line in proc.stderr.splitlines()]
        tail = "; ".join(line for line in lines if line)[-400:]
        return (
            f"no OpenGL backend for offscreen rendering: a {GL_WINDOW} probe {how}"
            f"{f' ({tail})' if tail else ''}; install {GL_PACKAGES} (make test does, as root)"
        )
    return None


@pytest.fixture(autouse=True)
def gl(monkeypatch):
    problem = gl_problem()
    if problem:
        pytest.skip(problem)
    monkeypatch.setenv("VTK_DEFAULT_OPENGL_WINDOW", GL_WINDOW)


# --------------------------------------------------------------------------- scenes


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """A folder with the phantom's CT, label and brain mask as NRRD files."""
    case = generate_case(SEED, KIND, THICKNESS, matrix=MATRIX)
    folder = tmp_path_factory.mktemp("render_phantom")
    for name, image in (("ct", case.image), ("label", case.label), ("brain", case.brain)):
        sitk.WriteImage(image, str(folder / f"{name}.nrrd"))
    label = sitk.GetArrayFromImage(case.label)
    assert (label == labels.ICH.value).sum() > 1000 and (label == labels.PHE.value).sum() > 1000
    assert case.params["gantry_tilt_deg"] > 5.0  # the axial plane must follow the tilted volume axes
    return folder


@pytest.fixture
def loaded(phantom_files):
    """Scene and logic, the CT read from NRRD (with its display node), the label imported as segments,
    and the label and brain mask as (k, j, i) arrays on the CT's voxels as Slicer reads them."""
    folder = phantom_files
    scene, logic, color_logic = new_mrml_scene()
    ct = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(folder / "ct.nrrd"))
    assert storage.ReadData(ct)
    ct.CreateDefaultDisplayNodes()
    seg = segments.import_labelmap_as_segments(scene, logic, folder / "label.nrrd", ct)
    arrays = []
    for name in ("label", "brain"):
        node = segments.read_labelmap_file(folder / f"{name}.nrrd")
        assert segments.grid_mismatch(node, ct) is None
        arrays.append(segments.volume_array(node).copy())
    label, brain = arrays[0], arrays[1].astype(bool)
    yield scene, logic, ct, seg, label, brain
    del color_logic


# --------------------------------------------------------------------------- helpers


def ras_of(ct, ijk) -> np.ndarray:
    return (segments.ijk_to_ras(ct) @ np.array([*map(float, ijk), 1.0]))[:3]


def ijk_of(ct, ras) -> np.ndarray:
    return (np.linalg.inv(segments.ijk_to_ras(ct)) @ np.array([*map(float, ras), 1.0]))[:3]


def deepest(mask2d: np.ndarray, spacing_yx) -> tuple[tuple[int, int], float]:
    """The (j, i) voxel of ``mask2d`` farthest from its edge, and that distance in mm."""
    depth = ndimage.distance_transform_edt(mask2d, sampling=spacing_yx)
    j, i = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return (int(j), int(i)), float(depth[j, i])


def grey(hu: float) -> float:
    return float(np.clip(hu / 80.0, 0.0, 1.0) * 255.0)


def grey_range(ct_array, k, j, i) -> tuple[float, float]:
    """The grey a linear interpolation near voxel (k, j, i) can give: the window of its 3x3 neighbours' HU."""
    patch = ct_array[k, j - 1 : j + 2, i - 1 : i + 2].astype(float)
    return grey(patch.min()), grey(patch.max())


def close_to(rgb, expected, tol: float = 3.0) -> bool:
    return bool(np.all(np.abs(np.asarray(rgb, dtype=float) - np.asarray(expected, dtype=float)) <= tol))


def hue_deg(rgb) -> float:
    h, _, _ = colorsys.rgb_to_hsv(*(float(c) / 255.0 for c in rgb))
    return h * 360.0


def hue_gap(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def points_on_slice(ct, label, brain, k):
    """RAS of a deep ICH voxel, a deep PHE voxel and a deep normal-brain voxel on slice k, with their (j, i)."""
    spacing_yx = tuple(ct.GetSpacing()[1::-1])
    ich, ich_depth = deepest(label[k] == labels.ICH.value, spacing_yx)
    phe, phe_depth = deepest(label[k] == labels.PHE.value, spacing_yx)
    far_from_lesion = ndimage.distance_transform_edt(label[k] == 0, sampling=spacing_yx) > 15.0
    normal, normal_depth = deepest(brain[k] & far_from_lesion, spacing_yx)
    # The points are well inside their regions, so that neither interpolation nor outlines reach them.
    assert ich_depth >= 3.0 and phe_depth >= 1.4 and normal_depth >= 5.0, (ich_depth, phe_depth, normal_depth)
    return {name: (ras_of(ct, (i, j, k)), (j, i)) for name, (j, i) in (("ICH", ich), ("PHE", phe), ("brain", normal))}


# --------------------------------------------------------------------------- tests


def test_axial_render_through_ich_shows_segment_colours_over_ct(loaded, tmp_path):
    scene, logic, ct, seg, label, brain = loaded
    ct_array = segments.volume_array(ct)
    centroid = render.segment_centroid_ras(seg, "ICH")
    expected_centroid = ras_of(ct, np.argwhere(label == labels.ICH.value).mean(axis=0)[::-1])
    np.testing.assert_allclose(centroid, expected_centroid, atol=1e-6)

    png = tmp_path / "axial_ich.png"
    result = render.render_slice(scene, ct, seg, png, ras=centroid, size=(512, 512), fill_opacity=1.0)
    assert result.window_class == GL_WINDOW
    assert result.path == png and png.is_file()
    with Image.open(png) as picture:
        assert picture.size == (512, 512)
        np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), result.rgb)

    # The plane is the volume's axial (k) plane, snapped onto the voxel slice nearest the centroid.
    k_float = ijk_of(ct, result.pixel_to_ras(256, 256))[2]
    k = round(k_float)
    assert abs(k_float - k) < 1e-3
    assert k == round(ijk_of(ct, centroid)[2])
    normal_ijk = np.linalg.inv(segments.ijk_to_ras(ct)[:3, :3]) @ result.xy_to_ras[:3, 2]
    assert abs(normal_ijk[0]) < 1e-6 and abs(normal_ijk[1]) < 1e-6

    points = points_on_slice(ct, label, brain, k)
    for name in points:
        assert abs(result.distance_to_plane_mm(points[name][0])) < 1e-3
    ich_rgb = result.color_at(points["ICH"][0])
    phe_rgb = result.color_at(points["PHE"][0])
    brain_rgb = result.color_at(points["brain"][0])
    assert close_to(ich_rgb, labels.ICH.color), f"ICH point shows {ich_rgb}, expected {labels.ICH.color}"
    assert close_to(phe_rgb, labels.PHE.color), f"PHE point shows {phe_rgb}, expected {labels.PHE.color}"
    low, high = grey_range(ct_array, k, *points["brain"][1])
    assert max(brain_rgb) - min(brain_rgb) <= 2, f"normal brain is not grey: {brain_rgb}"
    assert low - 2 <= float(np.mean(brain_rgb)) <= high + 2, f"brain grey {brain_rgb} outside {low:.0f}..{high:.0f}"
    assert 40 <= float(np.mean(brain_rgb)) <= 215  # window 0-80 HU: brain is mid-grey, not black or white

    # The ICH colour covers the bleed's area on this slice (fill, plus its outline in the same colour).
    sx, sy = ct.GetSpacing()[:2]
    px, py = result.pixel_spacing_mm
    expected_pixels = (label[k] == labels.ICH.value).sum() * sx * sy / (px * py)
    ich_pixels = np.all(np.abs(result.rgb.astype(int) - labels.ICH.color) <= 3, axis=2).sum()
    assert abs(ich_pixels - expected_pixels) <= 0.15 * expected_pixels, (ich_pixels, expected_pixels)


def test_default_display_blends_fill_over_ct_as_slicer_does(loaded, tmp_path):
    scene, logic, ct, seg, label, brain = loaded
    ct_array = segments.volume_array(ct)
    display = seg.GetDisplayNode()
    result = render.render_slice(scene, ct, seg, tmp_path / "default.png", ras=render.segment_centroid_ras(seg, "ICH"))
    k = round(ijk_of(ct, result.pixel_to_ras(256, 256))[2])
    points = points_on_slice(ct, label, brain, k)
    for cls in (labels.ICH, labels.PHE):
        alpha = display.GetOpacity() * display.GetOpacity2DFill() * display.GetSegmentOpacity2DFill(cls.key)
        assert 0.2 <= alpha <= 0.8, "Slicer's default fill is see-through"
        ras, (j, i) = points[cls.key]
        rgb = result.color_at(ras)
        low, high = grey_range(ct_array, k, j, i)
        for channel, value in enumerate(rgb):
            blend = [(1 - alpha) * g + alpha * cls.color[channel] for g in (low, high)]
            assert min(blend) - 3 <= value <= max(blend) + 3, f"{cls.key} channel {channel}: {value} vs {blend}"
        if max(rgb) - min(rgb) >= 20:  # a colour, not a near-grey: the hue is the segment's
            assert hue_gap(hue_deg(rgb), hue_deg(cls.color)) <= 6.0, (cls.key, rgb)
    assert hue_gap(hue_deg(result.color_at(points["ICH"][0])), hue_deg(labels.PHE.color)) > 25.0


def test_render_leaves_the_scene_as_it_was(loaded, tmp_path):
    scene, logic, ct, seg, label, brain = loaded
    k = int(round(np.argwhere(label == labels.ICH.value)[:, 0].mean()))
    points = points_on_slice(ct, label, brain, k)
    # A second segmentation covering the normal-brain point: not shown in the picture, and left visible.
    other_label = np.zeros_like(label)
    j, i = points["brain"][1]
    other_label[:, j - 8 : j + 9, i - 8 : i + 9] = labels.IVH.value
    other_node = segments.labelmap_node_from_array(other_label, ct)
    scene.AddNode(other_node)
    other = segments.import_labelmap_as_segments(scene, logic, other_node, ct)
    display, ct_display = seg.GetDisplayNode(), ct.GetDisplayNode()
    ct_display.SetAutoWindowLevel(0)
    ct_display.SetWindowLevel(350.0, 40.0)
    display.SetOpacity2DFill(0.3)
    ids_before = [scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())]

    result = render.render_slice(scene, ct, seg, None, ras=points["ICH"][0], fill_opacity=1.0, outline=False)
    assert result.path is None
    assert close_to(result.color_at(points["ICH"][0]), labels.ICH.color)
    brain_rgb = result.color_at(points["brain"][0])
    assert max(brain_rgb) - min(brain_rgb) <= 2, f"the other segmentation shows: {brain_rgb}"

    assert [scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())] == ids_before
    assert (ct_display.GetWindow(), ct_display.GetLevel(), ct_display.GetAutoWindowLevel()) == (350.0, 40.0, 0)
    assert display.GetOpacity2DFill() == pytest.approx(0.3) and display.GetVisibility2DOutline()
    assert other.GetDisplayNode().GetVisibility()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSliceNode") == 0


def test_ras_to_pixel_finds_a_single_bright_voxel():
    """On a tilted, anisotropic grid: the brightest pixel is where ras_to_pixel puts the voxel's centre."""
    scene, _, color_logic = new_mrml_scene()
    dims, spacing, origin = (30, 20, 10), (2.0, 1.5, 3.0), (10.0, -20.0, 5.0)
    array = np.zeros(dims[::-1], dtype=np.int16)
    array[6, 13, 7] = 80
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "dot")
    image = vtk.vtkImageData()
    image.SetDimensions(*dims)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.ravel()
    node.SetAndObserveImageData(image)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    t = math.radians(15.0)
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(t), -math.sin(t)], [0.0, math.sin(t), math.cos(t)]])
    directions = np.diag([-1.0, -1.0, 1.0]) @ tilt
    node.SetIJKToRASDirections(*directions.ravel())
    dot = ras_of(node, (7, 13, 6))
    count = scene.GetNumberOfNodes()
    for fov in (None, 20.0):
        result = render.render_slice(scene, node, None, None, ras=dot, size=(200, 160), field_of_view_mm=fov)
        red = result.rgb[..., 0].astype(int)
        pixel = result.ras_to_pixel(dot)
        assert red[pixel] == red.max() > 200, (fov, pixel, np.unravel_index(int(np.argmax(red)), red.shape))
        assert abs(result.distance_to_plane_mm(dot)) < 1e-6
        np.testing.assert_allclose(result.pixel_to_ras(*pixel), dot, atol=0.75 * max(result.pixel_spacing_mm))
        # Radiological convention as in Slicer's axial view: the patient's right is on the picture's left.
        right, anterior = result.ras_to_pixel(dot + [10.0, 0.0, 0.0]), result.ras_to_pixel(dot + [0.0, 10.0, 0.0])
        assert right.column < pixel.column and anterior.row < pixel.row
        if fov is not None:  # a square field of view along the shorter side, centred on the point
            assert result.pixel_spacing_mm == pytest.approx((fov / 160, fov / 160))
            assert pixel == (160 - 1 - 160 // 2, 200 // 2)
    with pytest.raises(ValueError, match="outside the picture"):
        result.ras_to_pixel(dot + [500.0, 0.0, 0.0])
    assert scene.GetNumberOfNodes() == count and node.GetDisplayNode() is None  # its temporary display node is gone
    del color_logic


def test_render_refuses_bad_arguments(loaded):
    scene, _, ct, seg, _, _ = loaded
    with pytest.raises(ValueError, match="orientation"):
        render.render_slice(scene, ct, seg, orientation="Oblique")
    with pytest.raises(ValueError, match="window_hu"):
        render.render_slice(scene, ct, seg, window_hu=(80.0, 0.0))
    with pytest.raises(KeyError):
        render.segment_centroid_ras(seg, "nope")
    assert scene.GetNumberOfNodesByClass("vtkMRMLSliceNode") == 0
