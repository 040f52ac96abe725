"""Scene-in helpers of the ICH Training module (no application, no Qt).

``cases``: save a CT and its corrected segmentation as a training case; list saved cases.
"""

from . import cases

__all__ = ["cases"]
