"""Scene-in, nodes-out helpers of the ICH Segmentation module (no application, no Qt).

``segments``: label maps to ICH/PHE/IVH segments and segments back to classes;
``measure``: volumes of segments and the volumes table; ``colors``: the scheme's colour table;
``logic``: the module logic on an injected scene; ``editing``: edits observed, training cases saved.
"""

from . import colors, measure, segments

__all__ = ["colors", "measure", "segments"]
