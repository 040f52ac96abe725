"""ichseg: the pure-Python core of the ICH Segmentation 3D Slicer extension.

Segments intracerebral hemorrhage (ICH), perihematomal edema (PHE) and
intraventricular hemorrhage (IVH) on non-contrast head CT.  No Slicer, no Qt.
"""

__version__ = "0.1.0"
