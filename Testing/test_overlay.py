"""The overlay montage on a large, non-LPS grid (regression: a NumPy view outlived its SimpleITK image -> segfault)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_montage_of_a_large_reoriented_label_in_a_fresh_process(tmp_path):
    code = textwrap.dedent(
        f"""
        import numpy as np, SimpleITK as sitk
        from ichseg.overlay import write_montage
        ct = np.full((160, 512, 512), 30, np.int16)
        lab = np.zeros(ct.shape, np.uint8)
        lab[70:90, 200:260, 220:300] = 1
        direction = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)  # RAS-like: both images are reoriented to LPS
        image, label = sitk.GetImageFromArray(ct), sitk.GetImageFromArray(lab)
        for im in (image, label):
            im.SetSpacing((0.45, 0.45, 1.0)); im.SetDirection(direction)
        write_montage({str(tmp_path / "m.png")!r}, image, label)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert (tmp_path / "m.png").stat().st_size > 1000
