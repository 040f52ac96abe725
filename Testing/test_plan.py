"""Planner: target spacing from the spacing distribution, CPU floor, anisotropic first stages, patch size."""

from __future__ import annotations

import numpy as np
import pytest

from ichseg.model import build_network
from ichseg.train.fingerprint import CaseInfo, Fingerprint
from ichseg.train.plan import Plan, PlanOptions, make_plan, network_topology, target_spacing

NO_FLOOR = (0.0, 0.0, 0.0)


def _fp(spacings, extent=(150.0, 190.0, 150.0), inplane=512):
    cases = []
    for i, (sx, sy, sz) in enumerate(spacings):
        size = [inplane, inplane, int(round(extent[2] / sz))]
        cases.append(CaseInfo(f"c{i}", [sx, sy, sz], size, list(extent), 0.0, {}, {}, -1024.0, 2000.0))
    return Fingerprint(cases, {})


def test_thick_slices_give_anisotropic_first_stages():
    plan = make_plan(_fp([(0.45, 0.45, 5.0)] * 6))
    assert plan.spacing_xyz == [1.0, 1.0, 5.0]  # in-plane raised to the CPU floor, z kept
    assert plan.kernels[0] == [1, 3, 3] and plan.kernels[1] == [1, 3, 3]
    assert plan.strides[1] == [1, 2, 2] and plan.strides[2] == [1, 2, 2]
    assert plan.anisotropic_stages == 2
    assert max(plan.kernels[-1]) == 3 and min(plan.kernels[-1]) == 3
    net = build_network(plan.architecture())
    assert net is not None


def test_isotropic_data_has_isotropic_stages():
    plan = make_plan(_fp([(1.5, 1.5, 1.5)] * 5), PlanOptions(min_spacing_xyz=NO_FLOOR))
    assert plan.spacing_xyz == [1.5, 1.5, 1.5]
    assert plan.anisotropic_stages == 0
    assert all(k == [3, 3, 3] for k in plan.kernels)
    assert plan.strides[1] == [2, 2, 2]


def test_target_spacing_follows_the_distribution():
    # isotropic-ish data: per-axis median
    sp, notes = target_spacing(
        np.array([[0.8, 0.8, 1.0], [0.9, 0.9, 1.2], [1.0, 1.0, 1.4]]), np.full((3, 3), 200), NO_FLOOR
    )
    assert sp == [0.9, 0.9, 1.2]
    # anisotropic data: the thick axis uses the 10th percentile, not the median
    spacings = np.array([[0.45, 0.45, z] for z in [5, 5, 5, 5, 5, 5, 2.5, 2.5, 1.0, 0.625]])
    sizes = np.array([[512, 512, int(150 / z)] for z in spacings[:, 2]])
    sp, notes = target_spacing(spacings, sizes, NO_FLOOR)
    assert sp[2] == pytest.approx(np.percentile(spacings[:, 2], 10), abs=1e-3)
    assert sp[:2] == [0.45, 0.45]
    assert any("10th percentile" in n for n in notes)
    # the CPU floor applies last
    sp, notes = target_spacing(spacings, sizes, (1.0, 1.0, 2.5))
    assert sp == [1.0, 1.0, 2.5]
    assert any("CPU-speed floor" in n for n in notes)


def test_mixed_synthetic_like_plan_is_cpu_sized():
    zs = [5.0] * 4 + [2.5] * 2 + [1.0] * 2 + [0.625] * 2
    plan = make_plan(_fp([(0.45, 0.45, z) for z in zs]))
    assert plan.spacing_xyz == [1.0, 1.0, 2.5]
    assert plan.kernels[0] == [1, 3, 3] and plan.strides[1] == [1, 2, 2]
    assert int(np.prod(plan.patch_size_zyx)) <= 32 * 128 * 128
    total = np.prod(np.array(plan.strides), axis=0)
    assert all(p % t == 0 for p, t in zip(plan.patch_size_zyx, total, strict=True))
    assert Plan.from_dict(plan.to_dict()) == plan


def test_given_patch_is_padded_to_the_stride_and_filters_set_depth():
    plan = make_plan(_fp([(1.0, 1.0, 1.0)] * 2), PlanOptions(patch_size_zyx=(20, 30, 30), filters=(4, 8, 16)))
    assert plan.filters == [4, 8, 16] and len(plan.strides) == 3
    assert plan.patch_size_zyx == [20, 32, 32]
    kernels, strides, patch = network_topology((2.5, 1.0, 1.0), (32, 128, 128))
    assert kernels[0] == [1, 3, 3] and strides[1] == [1, 2, 2] and kernels[1] == [3, 3, 3]
