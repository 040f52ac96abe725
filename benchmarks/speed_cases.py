"""Benchmark cases of ``inference_speed.py``: synthetic heads at the requested matrix, slice thickness and count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaseSpec:
    key: str
    thickness_mm: float
    matrix: int
    slices: int | None  # None: as generated
    pixel_mm: float | None  # None: as generated

    def describe(self) -> str:
        if self.pixel_mm and self.slices:
            px = f"{self.pixel_mm:g}x{self.pixel_mm:g}x{self.thickness_mm:g}"
            return f"{self.matrix}x{self.matrix}x{self.slices} at {px} mm"
        return f"{self.matrix}x{self.matrix} matrix, {self.thickness_mm:g} mm slices, phantom's own FOV and slice count"


CASES = {
    "a": CaseSpec("a", 5.0, 512, 40, 0.45),
    "b": CaseSpec("b", 1.0, 512, 160, 0.45),
}
SMOKE_CASES = {
    "a": CaseSpec("a", 5.0, 64, None, None),
    "b": CaseSpec("b", 2.5, 64, None, None),
}


def make_case(spec: CaseSpec, seed: int, kind: str, out: Path) -> dict:
    """Write ``out/<key>.nii.gz`` and ``out/<key>_label.nii.gz``; returns what was made."""
    import numpy as np
    import SimpleITK as sitk

    from ichseg.phantom import generate_case

    case = generate_case(seed, kind, spec.thickness_mm, matrix=spec.matrix, name=f"bench_{spec.key}")
    image, label = case.image, case.label
    generated = {"size": list(image.GetSize()), "spacing": [round(v, 4) for v in image.GetSpacing()]}
    if spec.slices:
        n = image.GetSize()[2]
        if n > spec.slices:  # crop evenly from both ends
            lo = (n - spec.slices) // 2
            hi = n - spec.slices - lo
            image = sitk.Crop(image, (0, 0, lo), (0, 0, hi))
            label = sitk.Crop(label, (0, 0, lo), (0, 0, hi))
        elif n < spec.slices:  # add air slices (-1000 HU with the phantom's noise level) at both ends
            lo = (spec.slices - n) // 2
            hi = spec.slices - n - lo
            padded = sitk.ConstantPad(image, (0, 0, lo), (0, 0, hi), -1000)
            arr = sitk.GetArrayFromImage(padded)
            rng = np.random.default_rng(seed)
            sigma = float(case.params.get("noise_sigma_hu") or 5.0)
            for sl in (slice(0, lo), slice(arr.shape[0] - hi, arr.shape[0])):
                arr[sl] = np.round(-1000.0 + rng.normal(0.0, sigma, arr[sl].shape)).astype(arr.dtype)
            new = sitk.GetImageFromArray(arr)
            new.CopyInformation(padded)
            image = new
            label = sitk.ConstantPad(label, (0, 0, lo), (0, 0, hi), 0)
    if spec.pixel_mm:
        spacing = (spec.pixel_mm, spec.pixel_mm, spec.thickness_mm)
        image.SetSpacing(spacing)
        label.SetSpacing(spacing)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": out / f"{spec.key}.nii.gz", "label": out / f"{spec.key}_label.nii.gz"}
    sitk.WriteImage(image, str(paths["image"]), True)
    sitk.WriteImage(label, str(paths["label"]), True)
    return {
        "spec": spec.describe(),
        "seed": seed,
        "kind": kind,
        "phantom_generated": generated,
        "size_xyz": list(image.GetSize()),
        "spacing_xyz_mm": [round(v, 4) for v in image.GetSpacing()],
        "voxels": int(np.prod(image.GetSize())),
        "image": str(paths["image"]),
        "label": str(paths["label"]),
    }
