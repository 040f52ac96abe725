"""The MRML scene and Segmentations logic a module logic works on: injected (tests, scripts) or Slicer's own."""

from __future__ import annotations


class SceneAccess:
    """Mixin for module logic classes: ``scene`` and ``segmentationsLogic`` default to the running Slicer's.

    Tests and headless scripts pass a ``vtkMRMLScene`` and a ``vtkSlicerSegmentationsModuleLogic`` so the
    logic works against slicer-core without the application.
    """

    def initSceneAccess(self, scene=None, segmentationsLogic=None) -> None:
        self._scene = scene
        self._segmentationsLogic = segmentationsLogic

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    @property
    def segmentationsLogic(self):
        if self._segmentationsLogic is None:
            import slicer

            self._segmentationsLogic = slicer.modules.segmentations.logic()
        return self._segmentationsLogic
