"""Head anatomy as implicit fields: scalp, skull (vault, diploe, base), brain, CSF spaces, deep grey
nuclei, ventricles, posterior fossa, falx, calcifications and the face/neck below the skull base.

Everything is defined in head coordinates (mm, x left, y posterior, z superior, origin at
the brain centre at basal-ganglia level) and rendered onto a working grid slab by slab (z
chunks that stay in cache).  Deep structures are evaluated at *deformed* coordinates so a
mass lesion can push them aside (``Deformation``).

``HeadModel`` renders the head; its types and constants are in ``anatomy_params``, the deep
brain-region fields in ``brain_regions`` and the face/neck primitives in ``face``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy_params import AIR_HU, CAVITY, FAT_HU, MUSCLE_HU, Anatomy, AnatomyParams, Deformation
from .brain_regions import VC, central_fields, fossa_fields, sulcal_field, sylvian_fields
from .face import face_primitives, paint
from .geometry import Box, WorkGrid
from .shapes import F32, Field, chain, ellipsoid, noise_field, soft

SLAB = 8  # working-grid z slices per rendering chunk
IHF_HALF = 30.0  # half-width of the box around the interhemispheric fissure


def _interp(z: np.ndarray, knots: list[float], values: list[float]) -> np.ndarray:
    return np.interp(z, knots, values).astype(F32)


class HeadModel:
    """One head: parameters, noise fields and the rendering onto a working grid."""

    def __init__(self, params: AnatomyParams) -> None:
        self.p = params
        sx, sy, sz = params.scale
        self.s = np.array([sx, sy, sz], dtype=float)

    def build_fields(self, rng: np.random.Generator) -> None:
        """Noise fields on one fixed 2 mm grid (independent of the working resolution, so the same
        head is rendered whatever the output matrix): texture, fine texture, gyral pattern and slow
        tissue variation, as channels 0–3 of ``self.fields``."""
        lo, hi = self.extent()
        tex = noise_field(rng, lo, hi, 2.0, 2.5)
        fine = noise_field(rng, lo, hi, 2.0, 1.4)
        var = noise_field(rng, lo, hi, 2.0, 12.0)
        sulci = sulcal_field(rng, lo, hi, tex.data.shape)
        self.fields = Field(np.stack([tex.data, fine.data, sulci, var.data]), tex.origin, tex.spacing)
        self.tex = self.fields.channel(0)
        self.fine = self.fields.channel(1)

    # ----------------------------------------------------------------- geometry
    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """Head box (head coordinates, mm) that the working grid must cover."""
        sx, sy, sz = self.s
        lo = np.array([-(66 * sx + 18), -(108 * sy + 6), -106.0])
        hi = np.array([66 * sx + 18, 98 * sy + 6, 71 * sz + self.p.skull_mm + self.p.scalp_mm + 8])
        return lo, hi

    def head_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Ellipsoid (centre, semi-axes) enclosing the skull vault and scalp, for scan planning."""
        sx, sy, sz = self.s
        t = self.p.skull_mm + self.p.scalp_mm + 10
        return np.array([0.0, 2.0 * sy, 0.0]), np.array([66 * sx + t, 84 * sy + t, 71 * sz + t])

    def point(self, p) -> tuple[float, float, float]:
        """Anatomical template point (mm) to head coordinates of this case."""
        q = np.asarray(p, dtype=float) * self.s
        return float(q[0]), float(q[1]), float(q[2])

    def floor(self, xa: np.ndarray, ya: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Skull-base maps on anatomical (x, y): cavity floor height, base bone thickness, base HU
        and marrow weight (all 2-D, shape (ny, nx))."""
        X = xa[None, :].astype(F32)
        Y = ya[:, None].astype(F32)
        ax = np.abs(X)

        def sig(t):
            return (1.0 / (1.0 + np.exp(-np.clip(t, -30, 30)))).astype(F32)

        y_sr = -24.0 - 0.28 * ax  # sphenoid ridge (anterior/middle fossa border)
        y_pr = -4.0 + 0.62 * np.maximum(ax - 10.0, 0.0)  # petrous ridge (middle/posterior fossa border)
        # orbital roofs: domes bulging up into the frontal lobes; cribriform plate lower in the midline
        dome = np.exp(-(((ax - 26.0) / 13.0) ** 2 + ((Y + 52.0) / 20.0) ** 2))
        ant = -30.0 + 13.0 * dome - 6.0 * np.exp(-(ax**2) / (2 * 7.0**2)) + 0.12 * np.maximum(-Y - 70.0, 0) * 3
        mid = -47.0 + 0.010 * (ax - 38.0) ** 2 + 0.012 * (Y + 6.0) ** 2
        post = -62.0 + 12.0 * ((ax / 48.0) ** 2 + ((Y - 48.0) / 42.0) ** 2)
        w_ant = sig((y_sr - Y) / 2.5)
        w_post = sig((Y - y_pr) / 3.0)
        z = mid + (ant - mid) * w_ant
        z = z + (post - z) * w_post
        # petrous crest
        crest = -30.0 - 6.0 * np.clip((ax - 12.0) / 45.0, 0, 1)
        dist = (Y - y_pr) / np.sqrt(1 + 0.62**2)
        z = np.maximum(z, crest - 0.12 * dist**2 - 100.0 * (ax < 9))
        # central skull base: planum, sella, dorsum, clivus
        yc = np.clip(Y, -60, 40)
        clivus = np.interp(yc, [-60, -22, -17, -12, -7, -3, 18, 40], [-27, -27, -33, -35, -27, -25, -66, -66])
        w_c = np.exp(-((ax / 11.0) ** 4)) * sig((-Y - 60.0) * -1.0)
        z = z + (clivus - z) * w_c * (Y > -60)
        # anterior fossa stays above the planum
        z = z + np.maximum(ant - 4.0 * np.exp(-((ax / 10.0) ** 4)) - z, 0) * sig((-22.0 - Y) / 1.5)
        # foramen magnum
        fm = ((X / 15.0) ** 2 + ((Y - 33.0) / 19.0) ** 2) < 1.0
        z = np.where(fm, -300.0, z).astype(F32)
        # base bone thickness and HU
        tb = 4.5 + 0.0 * X + 0.0 * Y
        tb = np.where(y_sr > Y, 3.0, tb)  # orbital roofs
        petrous = np.exp(-(((Y - y_pr) / 7.0) ** 2)) * (ax > 12) * (ax < 62)
        central = np.exp(-((ax / 16.0) ** 4)) * (Y > -36) * (Y < 24)
        tb = tb + 12.0 * petrous + 20.0 * central + 3.0 * w_post
        tb = np.where(fm, 0.0, tb)
        hu = self.p.table_hu + (self.p.petrous_hu - self.p.table_hu) * petrous
        marrow = np.clip(central + 0.4 * w_post * (1 - petrous), 0, 1)
        return z.astype(F32), tb.astype(F32), hu.astype(F32), marrow.astype(F32)

    # --------------------------------------------------------------- rendering
    def render(self, grid: WorkGrid, deform: Deformation | None = None) -> Anatomy:
        nz, ny, nx = grid.shape
        hu = np.empty(grid.shape, F32)
        brain = np.zeros(grid.shape, bool)
        vent = np.zeros(grid.shape, bool)
        d_cav = np.empty(grid.shape, F32)
        xs, ys, zs = grid.axes()
        sx, sy, sz = self.s
        xa, ya, za = xs / F32(sx), ys / F32(sy), zs / F32(sz)
        maps = self._maps(xa, ya, za)
        groups = self._groups(grid, deform)
        for k0 in range(0, nz, SLAB):
            k1 = min(k0 + SLAB, nz)
            self._slab(grid, k0, k1, xs, ys, zs, xa, ya, za, maps, groups, deform, hu, brain, vent, d_cav)
        anat = Anatomy(grid, hu, brain, vent, d_cav)
        self._sinuses(anat)
        self._lower_head(anat)
        self._overlays(anat, deform)
        anat.landmarks = self.landmarks()
        return anat

    def _groups(self, grid: WorkGrid, deform) -> dict[str, tuple[Box, Field, list[str]]]:
        """Deep-structure groups: their working-grid box and their fields, evaluated once on a lattice
        of their own (coarser than the working grid: the fields are smooth) at deformed coordinates."""
        vs = self.p.ventricle_scale
        lo_c = VC + (np.array([-36.0, -40.0, -28.0]) - VC) * vs - 6
        hi_c = VC + (np.array([36.0, 62.0, 24.0]) - VC) * vs + 6
        lo_c = np.minimum(lo_c, [-30.0, -24.0, -30.0])
        hi_c = np.maximum(hi_c, [30.0, 34.0, 24.0])
        boxes = {
            "sylvian": ((-72.0, -40.0, -24.0), (72.0, 28.0, 22.0), 2.0, sylvian_fields),
            "central": (lo_c, hi_c, 1.6, central_fields),
            "fossa": ((-60.0, -12.0, -76.0), (60.0, 96.0, -4.0), 1.6, fossa_fields),
            "canal": ((-20.0, 8.0, -112.0), (20.0, 56.0, -70.0), 2.0, fossa_fields),
        }
        pad = deform.max_shift if deform is not None else 0.0
        sx, sy, sz = self.s
        out = {}
        for name, (lo_t, hi_t, sp, fn) in boxes.items():
            lo, hi = np.asarray(lo_t) * self.s - pad - 2, np.asarray(hi_t) * self.s + pad + 2
            box = grid.box(lo, hi)
            if box.empty:
                continue
            n = [int(np.ceil((hi[i] - lo[i]) / sp)) + 1 for i in range(3)]
            xs, ys, zs = (F32(lo[i]) + F32(sp) * np.arange(n[i], dtype=F32) for i in range(3))
            X, Y, Z = xs[None, None, :], ys[None, :, None], zs[:, None, None]
            if deform is not None:
                X, Y, Z = deform.apply(X, Y, Z)
            f = fn(X / F32(sx), Y / F32(sy), Z / F32(sz), self.p, self.tex.sample(xs, ys, zs))
            keys = sorted(f)
            data = np.stack([np.broadcast_to(f[k], (n[2], n[1], n[0])) for k in keys]).astype(F32)
            out[name] = (box, Field(data, (float(lo[0]), float(lo[1]), float(lo[2])), sp), keys)
        return out

    def _maps(self, xa, ya, za) -> dict[str, np.ndarray]:
        c = CAVITY
        p = self.p
        zf, tb, base_hu, marrow = self.floor(xa, ya)
        # normal-distance factor of the floor (so steep walls get bone), limited where it is a cliff
        zs_ = ndimage.gaussian_filter(np.maximum(zf, -90.0), 1.5 / float(ya[1] - ya[0]))
        gy, gx = np.gradient(zs_, float(ya[1] - ya[0]), float(xa[1] - xa[0]))
        fn = np.maximum(1.0 / np.sqrt(1.0 + gx**2 + gy**2), 0.5).astype(F32)
        Y = ya[:, None]
        X = xa[None, :]
        a_y = c["a"] * (1 + 0.07 * (Y - c["y0"]) / c["b"])
        # narrower frontal pole
        a_y = a_y * (1 - 0.1 * np.clip((-Y - 40) / 45, 0, 1) ** 2)
        q2 = (X / a_y) ** 2 + ((Y - c["y0"]) / c["b"]) ** 2
        zz = za[:, None, None] - 0.0
        cz = np.where(zz > 0, c["c_up"], c["c_down"])
        qz = (zz / cz) ** 2
        # skull thickness (2-D) and scalp / temporalis
        t_v = p.skull_mm * (1 + 0.12 * np.tanh((np.abs(Y) - 60) / 15)) + 0 * X
        ax = np.abs(X)
        temporalis = np.clip((ax - 42) / 14, 0, 1) * np.exp(-(((Y + 5) / 38) ** 4)) * 4.5
        s_t = p.scalp_mm + temporalis + 1.5 * np.clip((Y - 60) / 30, 0, 1)
        # lower head (face/neck) outline per z
        kz = [-110, -90, -70, -50, -35, -20]
        yf = _interp(za, kz, [-90, -95, -100, -104, -108, -101])
        yb = _interp(za, kz, [64, 72, 82, 90, 95, 97])
        aw = _interp(za, kz, [56, 60, 66, 70, 72, 70])
        yc = (yf + yb) / 2
        bw = (yb - yf) / 2
        lx = (X[None, :, :] / aw[:, None, None]) ** 2  # (nz,1,nx)
        ly = ((Y[None, :, :] - yc[:, None, None]) / bw[:, None, None]) ** 2  # (nz,ny,1)
        sc = _interp(za, [-110, -70, -40, 200], [9.0, 6.0, 3.6, 3.2])[:, None, None]
        # interhemispheric fissure mask in (y, z): above the corpus callosum, above the tentorium
        yy = ya[None, :, None]
        zzz = za[:, None, None]
        cc = np.where(np.abs(yy - 2) < 36, 4 + 20 * np.sqrt(np.clip(1 - ((yy - 2) / 36) ** 2, 0, 1)), -300)
        fis = (zzz > cc) & (zzz > -6.0 - 0.28 * np.maximum(yy - 30.0, 0) + (yy < 22) * 300)
        fis = fis | ((yy < -36) & (zzz > -40))
        w_ihf = 0.6 + 2.2 * p.atrophy
        return {
            "zf": zf,
            "fn": fn,
            "tb": tb,
            "base_hu": base_hu,
            "marrow": marrow,
            "q2": q2.astype(F32),
            "qz": qz.astype(F32),
            "t_v": t_v.astype(F32),
            "s_t": s_t.astype(F32),
            "lx": lx.astype(F32),
            "ly": ly.astype(F32),
            "zcap": za.astype(F32),
            "sc": sc.astype(F32),
            "fis": fis,
            "w_ihf": np.float32(w_ihf),
        }

    def _slab(self, grid, k0, k1, xs, ys, zs, xa, ya, za, m, groups, deform, hu, brain, vent, d_cav_out) -> None:
        p = self.p
        w = grid.spacing
        R = CAVITY["r"]
        zsl = slice(k0, k1)
        Z = za[zsl, None, None]
        # --- cavity, skull, head outline
        rho = np.sqrt(m["q2"] + m["qz"][zsl], dtype=F32)
        d_v = (rho - F32(1)) * F32(R)
        d_f = (m["zf"][None] - Z) * m["fn"][None]
        d_cav = np.maximum(d_v, d_f)
        d_cav_out[zsl] = d_cav
        tb = m["tb"][None]
        d_bone = np.maximum(np.maximum(-d_cav, d_v - m["t_v"][None]), d_f - tb)
        d_up = d_v - (m["t_v"] + m["s_t"])[None]
        d_low = (np.sqrt(m["lx"][zsl] + m["ly"][zsl], dtype=F32) - F32(1)) * F32(55.0)
        d_low = np.maximum(d_low, (m["zcap"][zsl] + F32(16))[:, None, None])
        d_head = np.minimum(d_up, d_low)
        tex, fine, sul, var = self.fields.sample(xs, ys, zs[zsl])
        # --- soft tissue: skin, subcutaneous fat layer, muscle with thin fat planes
        depth_skin = -d_head
        sc = np.clip(F32(1.6) * (depth_skin - F32(1.3)), 0, 1) * np.clip(F32(1.0) * (m["sc"][zsl] - depth_skin), 0, 1)
        fat = sc * np.clip(F32(p.scalp_fat) + F32(0.25) * tex, 0, 1)
        planes = np.clip(F32(1.0) - np.abs(tex) * F32(9.0), 0, 1) * np.clip(depth_skin - m["sc"][zsl], 0, 1)
        fat = np.maximum(fat, planes * F32(0.7))
        soft_hu = F32(MUSCLE_HU) + (F32(FAT_HU) - F32(MUSCLE_HU)) * fat
        out = F32(AIR_HU) + (soft_hu - F32(AIR_HU)) * soft(d_head, w)
        # --- bone: tables, diploe, skull base
        t_v = m["t_v"][None]
        dip = np.clip(np.minimum(d_v - F32(1.7), t_v - F32(1.9) - d_v) * F32(0.8), 0, 1)
        dip *= np.clip(t_v - F32(4.0), 0, 1)
        bone_hu = F32(p.table_hu) - (F32(p.table_hu - p.diploe_hu) + F32(120) * fine) * dip
        in_base = np.clip((d_f + F32(1.0)) * F32(0.5), 0, 1)
        mar = np.clip(np.minimum(d_f - F32(2.0), tb - F32(2.0) - d_f) * F32(0.5), 0, 1) * m["marrow"][None]
        base = m["base_hu"][None] - (m["base_hu"][None] - F32(p.diploe_hu) + F32(150) * fine) * mar
        bone_hu += (base - bone_hu) * in_base
        out += (bone_hu - out) * soft(d_bone, w)
        # --- intracranial: CSF, cortex, white matter, sulci
        rim = F32(1.0 + 2.6 * p.atrophy)
        depth = -(d_cav + rim)
        ihf = self._ihf(zsl, xa, m)
        if ihf is not None:
            xsl, d_fis = ihf
            np.minimum(depth[:, :, xsl], d_fis, out=depth[:, :, xsl])
        depth_s = depth.copy()  # sulci start from the convexity and the medial surface only
        for sub, f in self._group_fields(grid, groups, ("sylvian",), k0, k1, deform):
            np.minimum(depth[sub], f["d_fissure"], out=depth[sub])
        efface = deform.efface(xs[None, None, :], ys[None, :, None], zs[zsl, None, None]) if deform else F32(1.0)
        w_s = F32(0.3 + 1.4 * p.atrophy) * efface
        reach = F32(p.sulcal_depth_mm) + F32(4) * tex
        taper = np.clip(F32(1.15) - depth_s / reach, 0, 1)
        d_sulc = np.maximum(np.abs(sul) - w_s * taper, depth_s - reach)
        t_gm = F32(3.2)
        d_gm = np.minimum(depth - t_gm, d_sulc - t_gm)
        d_par = np.maximum(-depth, -d_sulc)
        gm_f = soft(d_gm, w)
        tissue = F32(p.wm_hu) + F32(p.gm_hu - p.wm_hu) * gm_f
        tissue += F32(1.2) * var + F32(0.6) * tex
        par_f = soft(d_par, w)
        for sub, f in self._group_fields(grid, groups, ("fossa", "canal"), k0, k1, deform):
            self._apply_fossa(f, tissue[sub], par_f[sub], d_cav[sub], tex[sub], w)
            vent[k0:k1][sub] |= f["d_vent"] < 0
        for sub, f in self._group_fields(grid, groups, ("central",), k0, k1, deform):
            self._apply_central(f, tissue[sub], par_f[sub], gm_f[sub], tex[sub], w)
            vent[k0:k1][sub] |= f["d_vent"] < 0
        csf = F32(p.csf_hu) + F32(1.5) * tex
        ic = csf + (tissue - csf) * par_f
        if ihf is not None:
            xsl, _ = ihf
            fx = self._falx(grid, zsl, xa, m, xsl)
            ic[:, :, xsl] += (F32(p.falx_hu) - ic[:, :, xsl]) * fx
        cav_f = soft(d_cav, w)
        out += (ic - out) * cav_f
        hu[zsl] = out
        brain[zsl] = (par_f >= 0.5) & (d_cav < 0)

    def _group_fields(self, grid, groups, names, k0, k1, deform):
        """Yield (slab-relative slices, fields) of the named deep groups intersecting slab [k0, k1)."""
        for name in names:
            if name not in groups:
                continue
            box, field_, keys = groups[name]
            zsl = box.slices[0]
            a, b = max(zsl.start, k0), min(zsl.stop, k1)
            if b <= a:
                continue
            sl = (slice(a, b), box.slices[1], box.slices[2])
            xs, ys, zs = grid.axes(Box(sl))
            vals = field_.sample(xs, ys, zs)
            yield (slice(a - k0, b - k0), sl[1], sl[2]), dict(zip(keys, vals, strict=True))

    def _ihf(self, zsl, xa, m):
        """Signed distance to the interhemispheric fissure CSF in the midline box (or None)."""
        xsel = np.nonzero(np.abs(xa) < IHF_HALF)[0]
        if len(xsel) == 0:
            return None
        xsl = slice(int(xsel[0]), int(xsel[-1]) + 1)
        X = xa[None, None, xsl]
        d = np.abs(X - F32(self.p.midline_x_mm)) - m["w_ihf"]
        d = d + np.where(m["fis"][zsl], F32(0), F32(200))
        return xsl, d.astype(F32)

    def _falx(self, grid, zsl, xa, m, xsl) -> np.ndarray:
        """Fraction of each voxel covered by the falx, a dense sheet about 1 mm thick."""
        X = xa[None, None, xsl]
        w = grid.spacing
        t = 0.9
        fx = np.clip((t / 2 + w / 2 - np.abs(X - F32(self.p.midline_x_mm))) / F32(w), 0, min(1.0, t / w))
        return (fx * m["fis"][zsl]).astype(F32)

    def _apply_fossa(self, f, tissue, par_f, d_cav, tex, w) -> None:
        """Posterior fossa: cerebellum (grey-ish with folia, central white matter) and brainstem."""
        p = self.p
        pf = f["pf"]
        cb_hu = F32(p.gm_hu - 1.5) - F32(3.0) * soft(f["d_cbwm"], 4.0) + F32(1.0) * tex
        bs = soft(f["d_brainstem"], w)
        pf_hu = cb_hu + (F32(p.wm_hu + 3.5) - cb_hu) * bs
        tissue += (pf_hu - tissue) * pf
        d_pf = np.maximum(f["d_pf_par"], d_cav + F32(0.8 + 1.5 * p.atrophy))
        par_f += (soft(d_pf, w) - par_f) * pf

    def _apply_central(self, f, tissue, par_f, gm_f, tex, w) -> None:
        """Deep grey nuclei, periventricular hypodensity, ventricles and basal cisterns."""
        p = self.p
        for key, off in (("d_putamen", -1.0), ("d_pallidum", -4.0), ("d_caudate", -1.0), ("d_thalamus", -2.5)):
            nf = soft(f[key], w)
            tissue += (F32(p.gm_hu + off) - tissue) * nf
        if p.leukoaraiosis_hu > 0:
            lk = np.exp(-np.maximum(f["d_lat"], 0) / F32(7.0)) * np.clip(F32(0.6) + F32(0.6) * tex, 0, 1)
            tissue -= F32(p.leukoaraiosis_hu) * lk * (F32(1) - gm_f)
        d_csf = np.minimum(f["d_vent"], f["d_cistern"])
        par_f *= F32(1) - soft(d_csf, w)

    # ------------------------------------------------------------ lower head
    def _lower_head(self, anat: Anatomy) -> None:
        """Orbits, sinuses, mastoids, ears, jaw and upper cervical spine (painted over the base render)."""
        for prim in face_primitives(self, anat.grid):
            paint(anat, *prim)

    def _sinuses(self, anat: Anatomy) -> None:
        """Dural venous sinuses (superior sagittal, straight, transverse): dense blood next to the brain."""
        c = CAVITY
        pts = []
        for th in np.radians([-70, -45, -15, 15, 45, 75, 100, 118]):
            pts.append((self.p.midline_x_mm, c["y0"] + 0.965 * c["b"] * np.sin(th), 0.965 * c["c_up"] * np.cos(th)))
        radii = [1.8, 2.4, 3.0, 3.4, 3.8, 4.2, 4.4, 4.4]
        chains = [(pts, radii), ([(0.0, 34.0, 2.0), (0.0, 62.0, -12.0), pts[-1]], [2.2, 2.6, 3.0])]
        for sg in (-1, 1):
            tr = [pts[-1], (sg * 28.0, 74.0, -28.0), (sg * 48.0, 56.0, -34.0), (sg * 54.0, 34.0, -44.0)]
            chains.append((tr, [4.0, 3.8, 3.6, 3.4]))
        for chain_pts, r in chains:
            q = [self.point(p) for p in chain_pts]
            lo, hi = np.min(q, axis=0) - 8, np.max(q, axis=0) + 8
            box = anat.grid.box(lo, hi)
            if box.empty:
                continue
            X, Y, Z = anat.grid.mesh(box)
            f = soft(chain(X, Y, Z, q, r, k=1.5), anat.grid.spacing) * (anat.d_cavity[box.slices] < 0.5)
            h = anat.hu[box.slices]
            h += (F32(self.p.sinus_hu) - h) * f
            anat.brain[box.slices] &= f < 0.5

    def _overlays(self, anat: Anatomy, deform) -> None:
        """Calcifications (pineal, choroid plexus, basal ganglia, falx): painted after the lesions."""
        p = self.p
        items = []
        if p.pineal_calc:
            items.append(((0.0, 21.0, 2.0), p.pineal_calc[0], p.pineal_calc[1]))
        if p.choroid_calc:
            vs = p.ventricle_scale
            for side in (-1, 1):
                c = np.array([0.0, 5.0, 8.0]) + (np.array([side * 22.0, 30.0, 10.5]) - [0.0, 5.0, 8.0]) * vs
                items.append((tuple(c), p.choroid_calc[0] * (0.8 + 0.2 * side), p.choroid_calc[1]))
        if p.basal_ganglia_calc:
            for side in (-1, 1):
                items.append(((side * 18.0, -1.0, 0.0), p.basal_ganglia_calc[0], p.basal_ganglia_calc[1]))
        if p.falx_calcified:
            items.append(((p.midline_x_mm, -30.0, 45.0), 2.5, 400.0))
        for c_anat, r, h in items:
            c = np.asarray(self.point(c_anat))
            if deform is not None:
                c = _forward_point(deform, c)
            box = anat.grid.box(c - r - 3, c + r + 3)
            if box.empty:
                continue
            X, Y, Z = anat.grid.mesh(box)
            d = ellipsoid(X, Y, Z, c, (r, r * 1.2, r * 0.9))
            anat.overlays.append((box, soft(d, anat.grid.spacing), float(h)))

    def landmarks(self) -> dict[str, tuple[float, float, float]]:
        """Template points of the lesion sites and ventricles (head coordinates of this case)."""
        vs = self.p.ventricle_scale
        vc = np.array([0.0, 5.0, 8.0])

        def v(p):
            return self.point(vc + (np.asarray(p) - vc) * vs)

        out = {}
        for side, sgn in (("left", 1), ("right", -1)):
            out[f"putamen_{side}"] = self.point((sgn * 23.0, -2.0, 2.0))
            out[f"thalamus_{side}"] = self.point((sgn * 11.0, 13.0, 4.0))
            out[f"caudate_{side}"] = self.point((sgn * 14.0, -15.0, 9.0))
            out[f"cerebellum_{side}"] = self.point((sgn * 24.0, 52.0, -44.0))
            out[f"frontal_horn_{side}"] = v((sgn * 8.0, -15.0, 12.0))
            out[f"body_{side}"] = v((sgn * 10.0, 8.0, 17.0))
            out[f"occipital_horn_{side}"] = v((sgn * 21.0, 42.0, 8.0))
            out[f"temporal_horn_{side}"] = v((sgn * 30.0, 10.0, -12.0))
        out["pons"] = self.point((0.0, 10.0, -32.0))
        out["third_ventricle"] = v((0.0, 3.0, -2.0))
        out["fourth_ventricle"] = self.point((0.0, 26.0, -38.0))
        return out


def _forward_point(deform, c: np.ndarray, iters: int = 8) -> np.ndarray:
    """Where the anatomy point ``c`` ends up after the deformation (fixed-point inversion)."""
    q = c.copy()
    for _ in range(iters):
        a = np.asarray([np.asarray(v).ravel()[0] for v in deform.apply(*(np.float32([[[v]]]) for v in q))])
        q = q + (c - a)
    return q
