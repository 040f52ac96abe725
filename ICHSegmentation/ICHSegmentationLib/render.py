"""Offscreen pictures of a slice view: a CT with its segments drawn over it, as Slicer shows them.

:func:`render_slice` builds a private slice view from MRML's own pieces (``vtkMRMLSliceLogic``
for the CT layer, ``vtkMRMLSegmentationsDisplayableManager2D`` for the segments' fill and
outline) in an offscreen ``vtkRenderWindow``, renders it once, optionally writes a PNG, and
takes the view down again.  It is a scene-in function: it never touches ``slicer.app``,
``qt`` or ``slicer.util``, so it works in Slicer (GUI or ``--no-main-window``) and under
slicer-core, for batch reports, README pictures and tests.  :class:`SliceRender` maps RAS
points to pixels of the picture.

Which OpenGL window VTK creates is VTK's choice: a headless machine needs EGL (set
``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` before the first window is created, with
``libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1`` installed) or OSMesa.  Without any GL
backend VTK may crash the process, so probe in a child process first where that matters.

Side effects are undone: the temporary slice, composite and other nodes the view adds are
removed, and the display settings changed for the picture (CT window, segment opacities,
other segmentations hidden) are restored, also when rendering fails.  In the Slicer GUI the
layout manager sees the temporary slice node come and go (it makes and deletes a hidden view
for it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

__all__ = [
    "CT_WINDOW_HU",
    "Pixel",
    "SliceRender",
    "render_slice",
    "segment_centroid_ras",
]

#: Grey-scale window of the picture: 0 HU black, 80 HU white (a brain / blood window).
CT_WINDOW_HU: tuple[float, float] = (0.0, 80.0)
_LAYOUT_NAME = "ICHSegmentationRender"
_ORIENTATIONS = ("Axial", "Sagittal", "Coronal")


class Pixel(NamedTuple):
    """A pixel of a rendered picture: ``rgb[row, column]``; row 0 is the top row of the PNG."""

    row: int
    column: int


@dataclass
class SliceRender:
    """A rendered slice view and its geometry."""

    rgb: np.ndarray  # (height, width, 3) uint8, row 0 at the top, exactly as written to the PNG
    xy_to_ras: np.ndarray  # 4x4: view coordinates (x right, y up, pixel centres at integers) to RAS
    path: Path | None = None  # the PNG, when one was written
    window_class: str = ""  # the vtkRenderWindow class that drew it (e.g. vtkEGLRenderWindow)
    notes: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """Size of a pixel in mm along x and y of the picture."""
        return float(np.linalg.norm(self.xy_to_ras[:3, 0])), float(np.linalg.norm(self.xy_to_ras[:3, 1]))

    def _view_xyz(self, ras: Sequence[float]) -> np.ndarray:
        point = np.array([float(ras[0]), float(ras[1]), float(ras[2]), 1.0])
        return (np.linalg.inv(self.xy_to_ras) @ point)[:3]

    def distance_to_plane_mm(self, ras: Sequence[float]) -> float:
        """How far ``ras`` lies from the rendered plane, in mm (signed, along the slice normal)."""
        normal = self.xy_to_ras[:3, 2]
        normal = normal / np.linalg.norm(normal)
        return float(normal @ (np.asarray(ras, dtype=float)[:3] - self.xy_to_ras[:3, 3]))

    def ras_to_pixel(self, ras: Sequence[float]) -> Pixel:
        """The pixel that shows the RAS point ``ras`` (projected onto the plane); ValueError when outside."""
        x, y, _ = self._view_xyz(ras)
        column, row = round(float(x)), self.height - 1 - round(float(y))
        if not (0 <= column < self.width and 0 <= row < self.height):
            raise ValueError(f"RAS point {tuple(round(float(v), 2) for v in ras[:3])} is outside the picture")
        return Pixel(row, column)

    def pixel_to_ras(self, row: float, column: float) -> np.ndarray:
        """The RAS position (in the plane) at the centre of pixel ``(row, column)``."""
        xy = np.array([float(column), float(self.height - 1 - row), 0.0, 1.0])
        return (self.xy_to_ras @ xy)[:3]

    def color_at(self, ras: Sequence[float]) -> tuple[int, int, int]:
        """The RGB colour of the picture at the RAS point ``ras``."""
        pixel = self.ras_to_pixel(ras)
        return tuple(int(v) for v in self.rgb[pixel.row, pixel.column])  # type: ignore[return-value]


# --------------------------------------------------------------------------- helpers


def segment_centroid_ras(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str) -> np.ndarray | None:
    """The centroid (mean voxel centre) of a segment in world RAS, or None when the segment is empty.

    Uses the segment's binary labelmap; the segmentation's parent transform is applied to the point.
    """
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise KeyError(f"'{segmentation_node.GetName()}' has no segment '{segment_id}'")
    image = slicer.vtkOrientedImageData()
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, image, False
    ):
        raise RuntimeError(f"no binary labelmap for segment '{segment_id}' of '{segmentation_node.GetName()}'")
    scalars = image.GetPointData().GetScalars() if image.GetPointData() is not None else None
    if scalars is None:
        return None
    extent = image.GetExtent()
    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    if min(dims) <= 0:
        return None
    # Segments may share one labelmap (each its own label value); the copy holds all of them.
    mask = numpy_support.vtk_to_numpy(scalars).reshape(dims[::-1]) == segment.GetLabelValue()
    if not mask.any():
        return None
    k, j, i = (idx.mean() for idx in np.nonzero(mask))
    ijk = np.array([i + extent[0], j + extent[2], k + extent[4], 1.0])
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    local = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]) @ ijk
    parent = segmentation_node.GetParentTransformNode()
    if parent is None:
        return local[:3]
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(parent, None, to_world)
    return np.array(to_world.TransformPoint(*local[:3]))


class _Changes:
    """Property changes to undo, most recent first."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def set(self, obj: Any, prop: str, value: Any) -> None:
        """``obj.Set<prop>(value)``, remembering ``obj.Get<prop>()`` to put back."""
        old = getattr(obj, f"Get{prop}")()
        if old == value:
            return
        setter = getattr(obj, f"Set{prop}")
        self._undo.append(lambda: setter(old))
        setter(value)

    def add(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


def _node_ids(scene: slicer.vtkMRMLScene) -> list[str]:
    nodes = scene.GetNodes()
    return [nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())]


def _matrix(vtk_matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _unique_layout_name(scene: slicer.vtkMRMLScene) -> str:
    taken = set()
    for class_name in ("vtkMRMLSliceNode", "vtkMRMLSliceCompositeNode"):
        for i in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(i, class_name)
            taken.add(node.GetLayoutName() or "")
            taken.add(node.GetSingletonTag() or "")
    name, n = _LAYOUT_NAME, 1
    while name in taken:
        n += 1
        name = f"{_LAYOUT_NAME}{n}"
    return name


def _set_window(changes: _Changes, volume_node: slicer.vtkMRMLScalarVolumeNode, window_hu) -> None:
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()  # a new node: removed again with the view's nodes
        display = volume_node.GetDisplayNode()
    if display is None:
        raise RuntimeError(f"volume '{volume_node.GetName()}' has no display node and none could be made")
    if window_hu is None:
        return
    low, high = (float(v) for v in window_hu)
    if not high > low:
        raise ValueError(f"window_hu must be (low, high) with high > low, got {window_hu!r}")
    changes.set(display, "AutoWindowLevel", 0)
    old_window, old_level = display.GetWindow(), display.GetLevel()
    if (old_window, old_level) != (high - low, (high + low) / 2):
        changes.add(lambda: display.SetWindowLevel(old_window, old_level))
        display.SetWindowLevelMinMax(low, high)


def _show_only(
    changes: _Changes,
    scene: slicer.vtkMRMLScene,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None,
    view_id: str,
    fill_opacity: float | None,
    outline: bool | None,
) -> None:
    """Show ``segmentation_node`` (and no other segmentation) in the view ``view_id``."""
    shown_id = segmentation_node.GetID() if segmentation_node is not None else None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationDisplayNode")):
        display = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationDisplayNode")
        owner = display.GetDisplayableNode()
        if owner is None or owner.GetID() != shown_id:
            changes.set(display, "Visibility", 0)
    if segmentation_node is None:
        return
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    changes.set(display, "Visibility", 1)
    changes.set(display, "Visibility2D", 1)
    if display.GetNumberOfViewNodeIDs() > 0 and not display.IsDisplayableInView(view_id):
        display.AddViewNodeID(view_id)
        changes.add(lambda: display.RemoveViewNodeID(view_id))
    if fill_opacity is not None:
        opacity = float(fill_opacity)
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"fill_opacity must be within 0..1, got {fill_opacity!r}")
        changes.set(display, "Opacity", 1.0)
        changes.set(display, "Visibility2DFill", 1 if opacity > 0 else 0)
        changes.set(display, "Opacity2DFill", opacity)
    if outline is not None:
        changes.set(display, "Visibility2DOutline", 1 if outline else 0)
        if outline:
            changes.set(display, "Opacity2DOutline", 1.0)


@contextmanager
def _slice_view(scene: slicer.vtkMRMLScene, app_logic: slicer.vtkMRMLApplicationLogic | None, size: tuple[int, int]):
    """A private slice view (logic, node, renderer with the segmentation displayable manager); torn down after."""
    before = set(_node_ids(scene))
    own_app_logic = app_logic is None
    if own_app_logic:
        app_logic = slicer.vtkMRMLApplicationLogic()
        app_logic.SetMRMLScene(scene)
    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLApplicationLogic(app_logic)
    slice_logic.SetMRMLScene(scene)
    render_window = vtk.vtkRenderWindow()
    group = slicer.vtkMRMLDisplayableManagerGroup()
    try:
        slice_node = slice_logic.AddSliceNode(_unique_layout_name(scene))
        if slice_node is None or slice_logic.GetSliceCompositeNode() is None:
            raise RuntimeError("could not create a slice view")

        width, height = size
        render_window.SetOffScreenRendering(1)
        render_window.SetMultiSamples(0)  # no anti-aliasing: pixels are exactly what the layers give
        render_window.SetSize(width, height)
        renderer = vtk.vtkRenderer()
        renderer.SetBackground(0.0, 0.0, 0.0)
        renderer.GetActiveCamera().ParallelProjectionOn()
        render_window.AddRenderer(renderer)
        # Displayable managers observe the render window's interactor; a generic one needs no display.
        interactor = vtk.vtkGenericRenderWindowInteractor()
        interactor.SetRenderWindow(render_window)

        # The CT layer: the slice logic's blended RGBA image, drawn 1:1 in view pixels (as Slicer's
        # light-box renderer manager does).
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255.0)
        mapper.SetColorLevel(127.5)  # its input is set once the layers are chosen (the connection changes)
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        actor.GetProperty().SetDisplayLocationToBackground()
        renderer.AddViewProp(actor)

        # The segments: Slicer's own 2D displayable manager, from a private factory (the singleton
        # factory belongs to the application's views).
        factory = slicer.vtkMRMLDisplayableManagerFactory()
        factory.SetMRMLApplicationLogic(app_logic)
        factory.RegisterDisplayableManager("vtkMRMLSegmentationsDisplayableManager2D")
        group.Initialize(factory, renderer)
        if group.GetDisplayableManagerByClassName("vtkMRMLSegmentationsDisplayableManager2D") is None:
            raise RuntimeError("the segmentation displayable manager is not available")
        group.SetMRMLDisplayableNode(slice_node)
        slice_logic.ResizeSliceNode(width, height)
        yield slice_logic, slice_node, render_window, mapper
    finally:
        group.SetMRMLDisplayableNode(None)
        render_window.Finalize()
        slice_logic.SetMRMLScene(None)
        if own_app_logic:
            app_logic.SetMRMLScene(None)
        for node_id in reversed(_node_ids(scene)):
            node = scene.GetNodeByID(node_id)
            if node_id not in before and node is not None:
                scene.RemoveNode(node)


def _grab(render_window: vtk.vtkRenderWindow) -> vtk.vtkImageData:
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(render_window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.ShouldRerenderOff()
    grab.Update()
    image = vtk.vtkImageData()
    image.DeepCopy(grab.GetOutput())
    return image


def _to_rgb(image: vtk.vtkImageData) -> np.ndarray:
    width, height, _ = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return np.ascontiguousarray(array.reshape(height, width, -1)[::-1, :, :3])  # VTK rows run bottom-up


# --------------------------------------------------------------------------- rendering


def render_slice(
    scene: slicer.vtkMRMLScene,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
    path: str | Path | None = None,
    *,
    ras: Sequence[float] | None = None,
    orientation: str = "Axial",
    align_to_volume: bool = True,
    size: tuple[int, int] = (512, 512),
    field_of_view_mm: float | None = None,
    window_hu: tuple[float, float] | None = CT_WINDOW_HU,
    fill_opacity: float | None = None,
    outline: bool | None = None,
    app_logic: slicer.vtkMRMLApplicationLogic | None = None,
) -> SliceRender:
    """Render one slice of ``volume_node`` with ``segmentation_node``'s segments over it, offscreen.

    The slice is the ``orientation`` view ("Axial", "Sagittal", "Coronal") through ``ras`` (the
    volume's centre when None).  With ``align_to_volume`` it is turned to the volume's nearest
    voxel axes (as acquired, e.g. along a gantry tilt) and snapped to a voxel slice, as Slicer's
    "rotate to volume plane" does; otherwise it is the RAS-aligned plane through ``ras``.  The
    whole volume fits the picture, or a square ``field_of_view_mm`` (along the picture's shorter
    side) centred on ``ras``.  The CT is shown with ``window_hu`` (None: the volume's own
    window); the segments as the segmentation's display node says, except a given
    ``fill_opacity`` (0..1) and ``outline`` (on/off).  Other segmentations are not shown.

    ``app_logic``: ``slicer.app.applicationLogic()`` in Slicer; a private one is made when None.
    The PNG is written to ``path`` when given.  Returns the picture and its geometry.
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError("a volume with image data is required")
    if orientation not in _ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(_ORIENTATIONS)}, got {orientation!r}")
    width, height = (int(v) for v in size)
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise ValueError(f"size must be 16..8192 pixels each way, got {size!r}")

    changes = _Changes()
    notes: list[str] = []
    try:
        with _slice_view(scene, app_logic, (width, height)) as (slice_logic, slice_node, render_window, mapper):
            _set_window(changes, volume_node, window_hu)
            _show_only(changes, scene, segmentation_node, slice_node.GetID(), fill_opacity, outline)
            composite = slice_logic.GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume_node.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLabelVolumeID(None)

            slice_node.SetOrientation(orientation)
            if align_to_volume:
                slice_logic.RotateSliceToLowestVolumeAxes(False)
            slice_logic.FitSliceToBackground(width, height)
            if ras is None:
                bounds = [0.0] * 6
                volume_node.GetRASBounds(bounds)
                point = [(bounds[2 * a] + bounds[2 * a + 1]) / 2 for a in range(3)]
            else:
                point = [float(v) for v in ras[:3]]
                if len(point) != 3 or not np.isfinite(point).all():
                    raise ValueError(f"ras must be three finite numbers, got {ras!r}")
            if field_of_view_mm is not None:
                fov = float(field_of_view_mm)
                if not fov > 0:
                    raise ValueError(f"field_of_view_mm must be positive, got {field_of_view_mm!r}")
                scale = fov / min(width, height)
                slice_node.SetFieldOfView(width * scale, height * scale, slice_node.GetFieldOfView()[2])
                slice_node.JumpSliceByCentering(*point)
            else:
                slice_node.JumpSliceByOffsetting(*point)
            if align_to_volume:
                slice_logic.SnapSliceOffsetToIJK()

            slice_logic.UpdatePipeline()
            connection = slice_logic.GetImageDataConnection()
            if connection is None:
                raise RuntimeError(f"the slice view shows no image of '{volume_node.GetName()}'")
            mapper.SetInputConnection(connection)
            render_window.Render()
            render_window.Render()  # the displayable manager may update its pipeline on the first render
            image = _grab(render_window)
            if tuple(image.GetDimensions()[:2]) != (width, height):
                raise RuntimeError(f"rendered {image.GetDimensions()[:2]}, expected {(width, height)}")
            result = SliceRender(
                rgb=_to_rgb(image),
                xy_to_ras=_matrix(slice_node.GetXYToRAS()),
                window_class=render_window.GetClassName(),
                notes=notes,
            )
            if ras is not None:
                off = result.distance_to_plane_mm(point)
                if abs(off) > 1e-3:
                    notes.append(f"the slice lies {off:+.2f} mm from the requested point (snapped to a voxel slice)")
            mapper.SetInputConnection(None)
    finally:
        changes.undo()

    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = vtk.vtkPNGWriter()
        writer.SetFileName(str(out))
        writer.SetInputData(image)
        writer.Write()
        if writer.GetErrorCode() or not out.is_file():
            raise OSError(f"could not write {out}")
        result.path = out
    return result
