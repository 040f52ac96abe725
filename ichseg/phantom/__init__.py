"""Realistic synthetic non-contrast head CT with ICH, PHE and IVH ground truth.

The generator is the project's training data, test fixtures and demo case::

    from ichseg.phantom import generate_case, write_case
    case = generate_case(7, "ich_phe_ivh", 5.0)
    write_case(case, "out/")
"""

from .generator import CASE_KINDS, SLICE_THICKNESSES, PhantomCase, generate_case, write_case
from .lesions import draw_ich_volume, draw_ivh_volume

__all__ = [
    "CASE_KINDS",
    "SLICE_THICKNESSES",
    "PhantomCase",
    "generate_case",
    "write_case",
    "draw_ich_volume",
    "draw_ivh_volume",
]
