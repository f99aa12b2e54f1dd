"""The phantom's anatomy: a breathing thorax as a label map per slice, and the HU of each label.

Everything is defined in millimetres in the patient coordinate system (DICOM LPS: +x towards the
patient's left, +y posterior, +z towards the head), so the anatomy does not change with the matrix
size or the number of slices; only its sampling does. A slice is built as a ``uint8`` label map by
painting structures in order of precedence (a later structure replaces an earlier one), then mapped
to HU through a per-phase lookup table, so every voxel carries exactly one tissue and lung voxels
have no partial volume.

Breathing: ``b(p) = (1 + cos(2*pi*p/P)) / 2`` is 1 at phase 0 (end-inspiration) and 0 at phase
``P//2`` (end-expiration, exactly 0 when P is even). With ``b``, the diaphragm (the lung base) moves
caudally by :data:`DIAPHRAGM_TRAVEL_MM` and the chest cavity and lungs grow laterally and
antero-posteriorly by :data:`LATERAL_GROWTH`.

Density: lung tissue mass is conserved. With ``rho = (HU + 1000) / 1000`` (mass per volume relative
to water) and ``N(p)`` lung voxels of a region at phase p, its mass ``rho(p) * N(p) * v`` is constant,
so ``HU(p) = (HU_exhale + 1000) * N(exhale) / N(p) - 1000``, computed separately for normal lung and
for the poorly ventilated defect (whose volume, being fixed in mm, barely changes; see
:func:`lung_hu`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# -- geometry (mm) -------------------------------------------------------------------------------
FOV_MM = 400.0  #: square field of view (rows and columns)
COVERAGE_MM = 300.0  #: craniocaudal coverage of a phase
Z_TOP_MM = COVERAGE_MM / 2  #: slice 0 is the most superior; z decreases head -> feet

# -- labels (the painting order is the precedence) -----------------------------------------------
AIR, FAT, SOFT_TISSUE, LUNG, DEFECT, AIRWAY, BLOOD, CORTICAL_BONE, CANCELLOUS_BONE, DISC = range(10)
LABEL_NAMES = (
    "air",
    "fat",
    "soft_tissue",
    "lung",
    "lung_defect",
    "airway",
    "blood",
    "cortical_bone",
    "cancellous_bone",
    "disc",
)
#: HU of every label that does not breathe; lung and defect come from :func:`lung_hu` per phase.
FIXED_HU = {
    AIR: -1000,
    FAT: -100,
    SOFT_TISSUE: 40,
    AIRWAY: -1000,
    BLOOD: 40,
    CORTICAL_BONE: 900,
    CANCELLOUS_BONE: 350,
    DISC: 80,
}
NORMAL_LUNG_HU_EXHALE = -700  #: normal lung at end-expiration
DEFECT_HU_EXHALE = -600  #: the poorly ventilated region at end-expiration (denser, less air)
LUNG_HU_RANGE = (-950, -400)  #: every lung voxel and no other voxel has HU in this closed range
NOISE_SIGMA_HU = 5.0
NOISE_CLIP_HU = 15  #: noise is Gaussian clipped to +-3 sigma, so tissues stay separable

# -- breathing -------------------------------------------------------------------------------------
DIAPHRAGM_TRAVEL_MM = 18.0
LATERAL_GROWTH = 0.03
LUNG_APEX_Z = 128.0
BODY_AXES = (168.0, 118.0)  #: outer body ellipse, semi-axes x, y
FAT_MM = 14.0  #: subcutaneous fat layer
CAVITY_AXES = (132.0, 92.0)  #: inner chest wall (pleural cavity) at end-expiration
RIB_MM = 9.0  #: rib thickness (radial and craniocaudal)


@dataclass(frozen=True)
class Lung:
    """One lung: an ellipse in each slice, narrowing to the apex, on a diaphragm dome."""

    cx: float
    cy: float
    a: float  #: lateral semi-axis at the widest, end-expiration
    b: float  #: antero-posterior semi-axis
    base_z: float  #: z of the costophrenic recess at end-expiration
    dome_mm: float  #: how far the diaphragm dome rises above the recess


RIGHT_LUNG = Lung(cx=-74.0, cy=4.0, a=51.0, b=71.0, base_z=-78.0, dome_mm=30.0)
LEFT_LUNG = Lung(cx=76.0, cy=8.0, a=46.0, b=67.0, base_z=-86.0, dome_mm=24.0)


@dataclass(frozen=True)
class Defect:
    """The poorly ventilated region: centred in lung-relative coordinates of the right lower lobe
    (so it follows the lung and the diaphragm), with a size fixed in mm (it does not inflate)."""

    u: float = -0.05  #: centre x as a fraction of the lung's lateral semi-axis
    v: float = 0.40  #: centre y as a fraction of the lung's AP semi-axis (posterior)
    t: float = 0.30  #: centre height as a fraction of base -> apex
    rx: float = 42.0
    ry: float = 38.0
    rz: float = 38.0


DEFECT_REGION = Defect()


def breathing(phase: int, phases: int) -> float:
    """The breathing curve ``b(p) = (1 + cos(2*pi*p/P)) / 2``: 1 at end-inspiration (phase 0).

    Examples
    --------
    >>> breathing(0, 10), breathing(5, 10)
    (1.0, 0.0)
    """
    return (1.0 + math.cos(2.0 * math.pi * phase / phases)) / 2.0


def lung_hu(n_exhale: int, n_phase: int, hu_exhale: float) -> int:
    """HU of a lung region at a phase from mass conservation, rounded to a whole HU.

    ``rho = (HU + 1000) / 1000``; ``rho(p) * N(p) = rho(exhale) * N(exhale)`` gives
    ``HU(p) = (HU_exhale + 1000) * N_exhale / N(p) - 1000``.

    Examples
    --------
    >>> lung_hu(3000, 3600, -700)
    -750
    """
    if n_phase == 0:
        return int(hu_exhale)
    return round((hu_exhale + 1000.0) * n_exhale / n_phase - 1000.0)


class Thorax:
    """Label maps of the breathing thorax sampled on one grid.

    Parameters
    ----------
    size : int
        Rows = columns.
    slices : int
        Slices per phase over :data:`COVERAGE_MM`.
    phases : int
        Respiratory phases.

    Examples
    --------
    >>> t = Thorax(size=64, slices=10, phases=4)
    >>> labels = t.labels(phase=0, index=5)
    >>> labels.shape, labels.dtype.name, int(labels[0, 0]) == AIR
    ((64, 64), 'uint8', True)
    """

    def __init__(self, *, size: int, slices: int, phases: int) -> None:
        self.size, self.slices, self.phases = size, slices, phases
        self.pixel_mm = FOV_MM / size
        self.slice_mm = COVERAGE_MM / slices
        # Pixel centres: column j at x_j, row i at y_i (rows run posterior, columns to the left).
        centres = -FOV_MM / 2 + self.pixel_mm * (np.arange(size) + 0.5)
        self.x = centres
        self.y = centres
        yy, xx = np.meshgrid(self.y, self.x, indexing="ij")
        # Ribs: the angle around the cavity (0 = posterior) and the anterior slope of each rib.
        angle = np.arctan2(xx, yy)
        self._rib_drop = (30.0 * (1.0 - np.cos(angle)) / 2.0).astype(np.float32)
        self._rib_anterior_gap = np.abs(np.abs(angle) - np.pi) < np.radians(28)

    def z(self, index: int) -> float:
        """z (mm) of slice ``index``'s centre; slice 0 is the most superior."""
        return Z_TOP_MM - (index + 0.5) * self.slice_mm

    def labels(self, phase: int, index: int) -> NDArray[np.uint8]:
        """The label map of slice ``index`` at ``phase`` (rows x columns, ``uint8``)."""
        b = breathing(phase, self.phases)
        z = self.z(index)
        growth = 1.0 + LATERAL_GROWTH * b
        out = np.full((self.size, self.size), AIR, dtype=np.uint8)
        self._ellipse(out, 0.0, 0.0, *BODY_AXES, FAT)
        self._ellipse(out, 0.0, 0.0, BODY_AXES[0] - FAT_MM, BODY_AXES[1] - FAT_MM, SOFT_TISSUE)
        cavity = (CAVITY_AXES[0] * growth, CAVITY_AXES[1] * growth)
        for lung in (RIGHT_LUNG, LEFT_LUNG):
            self._lung(out, lung, z, b, growth, cavity)
        self._defect(out, z, b, growth)
        self._mediastinum(out, z)
        self._spine(out, z)
        self._ribs(out, z, cavity)
        return out

    # -- painting --------------------------------------------------------------------------------

    def _window(self, cx: float, cy: float, rx: float, ry: float) -> tuple[slice, slice]:
        """Rows and columns of the grid that can fall inside an ellipse (a bounding box)."""

        def span(centres: NDArray[np.floating], c: float, r: float) -> slice:
            lo = int(np.searchsorted(centres, c - r, side="left"))
            hi = int(np.searchsorted(centres, c + r, side="right"))
            return slice(lo, hi)

        return span(self.y, cy, ry), span(self.x, cx, rx)

    def _radius2(
        self, cx: float, cy: float, rx: float, ry: float
    ) -> tuple[tuple[slice, slice], NDArray[np.float64]]:
        """Normalised squared radius ``((x-cx)/rx)^2 + ((y-cy)/ry)^2`` over the bounding box."""
        rows, cols = self._window(cx, cy, rx, ry)
        dx = ((self.x[cols] - cx) / rx) ** 2
        dy = ((self.y[rows] - cy) / ry) ** 2
        return (rows, cols), dy[:, None] + dx[None, :]

    def _ellipse(
        self, out: NDArray[np.uint8], cx: float, cy: float, rx: float, ry: float, label: int
    ) -> None:
        if rx <= 0 or ry <= 0:
            return
        window, q = self._radius2(cx, cy, rx, ry)
        out[window][q <= 1.0] = label

    def _lung(
        self,
        out: NDArray[np.uint8],
        lung: Lung,
        z: float,
        b: float,
        growth: float,
        cavity: tuple[float, float],
    ) -> None:
        base = lung.base_z - DIAPHRAGM_TRAVEL_MM * b
        if not base <= z <= LUNG_APEX_Z:
            return
        t = (z - base) / (LUNG_APEX_Z - base)
        # Wide at the base, rounding off towards the apex.
        profile = 1.0 if t < 0.45 else math.sqrt(max(0.0, 1.0 - ((t - 0.45) / 0.55) ** 2))
        rx, ry = lung.a * growth * profile, lung.b * growth * profile
        if rx <= 0 or ry <= 0:
            return
        window, q = self._radius2(lung.cx, lung.cy, rx, ry)
        # The diaphragm dome: the lung starts higher in the middle than at the recess.
        inside = (q <= 1.0) & (z >= base + lung.dome_mm * (1.0 - q))
        rows, cols = window
        cq = ((self.x[cols] / cavity[0]) ** 2)[None, :] + ((self.y[rows] / cavity[1]) ** 2)[:, None]
        inside &= cq <= 1.0
        out[window][inside] = LUNG

    def _defect(self, out: NDArray[np.uint8], z: float, b: float, growth: float) -> None:
        lung = RIGHT_LUNG
        base = lung.base_z - DIAPHRAGM_TRAVEL_MM * b
        cz = base + DEFECT_REGION.t * (LUNG_APEX_Z - base)
        dz = (z - cz) / DEFECT_REGION.rz
        if abs(dz) >= 1.0:
            return
        cx = lung.cx + DEFECT_REGION.u * lung.a * growth
        cy = lung.cy + DEFECT_REGION.v * lung.b * growth
        window, q = self._radius2(cx, cy, DEFECT_REGION.rx, DEFECT_REGION.ry)
        sub = out[window]
        sub[(q <= 1.0 - dz * dz) & (sub == LUNG)] = DEFECT

    def _mediastinum(self, out: NDArray[np.uint8], z: float) -> None:
        # Heart: an ellipsoid left-anterior between the lungs, resting on the diaphragm.
        hz = (z - (-45.0)) / 58.0
        if abs(hz) < 1.0:
            k = math.sqrt(1.0 - hz * hz)
            self._ellipse(out, 18.0, -30.0, 62.0 * k, 50.0 * k, BLOOD)
        # Descending aorta, left of the spine; two pulmonary vessels per lung.
        if z < 40.0:
            self._ellipse(out, 26.0, 42.0, 11.0, 11.0, BLOOD)
        for cx, cy, r in ((-60.0, -20.0, 5.0), (-95.0, 25.0, 3.5), (62.0, -15.0, 4.5), (92.0, 30.0, 3.0)):
            if -60.0 < z < 45.0:
                self._ellipse(out, cx, cy, r, r, BLOOD)
        # Trachea down to the carina, then the main bronchi descending into each lung.
        carina_z = 45.0
        if z >= carina_z:
            self._ellipse(out, 0.0, -4.0, 9.0, 9.0, AIRWAY)
        else:
            for end_x, end_z, r in ((-62.0, 5.0, 6.5), (58.0, -2.0, 5.5)):
                f = (carina_z - z) / (carina_z - end_z)
                if 0.0 <= f <= 1.0:
                    self._ellipse(out, end_x * f, -4.0 + 6.0 * f, r, r, AIRWAY)

    def _spine(self, out: NDArray[np.uint8], z: float) -> None:
        # Vertebrae 28 mm high separated by 6 mm discs.
        disc = (z + 1000.0) % 34.0 < 6.0
        if disc:
            self._ellipse(out, 0.0, 72.0, 18.0, 16.0, DISC)
        else:
            self._ellipse(out, 0.0, 72.0, 18.0, 16.0, CORTICAL_BONE)
            self._ellipse(out, 0.0, 72.0, 15.0, 13.0, CANCELLOUS_BONE)
            # Posterior arch around the canal and the spinous process.
            self._ellipse(out, 0.0, 100.0, 14.0, 12.0, CORTICAL_BONE)
            rows, cols = self._window(0.0, 118.0, 3.5, 12.0)
            out[rows, cols] = CORTICAL_BONE
        self._ellipse(out, 0.0, 99.0, 8.0, 8.0, SOFT_TISSUE)  # spinal canal

    def _ribs(self, out: NDArray[np.uint8], z: float, cavity: tuple[float, float]) -> None:
        if not -115.0 <= z <= 125.0:
            return
        outer = (cavity[0] + RIB_MM, cavity[1] + RIB_MM)
        window, q = self._radius2(0.0, 0.0, *outer)
        rows, cols = window
        cq = ((self.x[cols] / cavity[0]) ** 2)[None, :] + ((self.y[rows] / cavity[1]) ** 2)[:, None]
        ring = (q <= 1.0) & (cq > 1.0) & ~self._rib_anterior_gap[window]
        # Ribs every 24 mm, sloping down anteriorly by up to 30 mm.
        level = (z + 1000.0 + self._rib_drop[window]) % 24.0
        ring &= level < RIB_MM
        out[window][ring] = CORTICAL_BONE


def hu_lut(normal_hu: int, defect_hu: int) -> NDArray[np.int16]:
    """Per-label HU for one phase (index = label)."""
    lut = np.zeros(len(LABEL_NAMES), dtype=np.int16)
    for label, hu in FIXED_HU.items():
        lut[label] = hu
    lut[LUNG] = normal_hu
    lut[DEFECT] = defect_hu
    return lut


def noise(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.int16]:
    """Gaussian noise in whole HU, sigma :data:`NOISE_SIGMA_HU`, clipped to +-:data:`NOISE_CLIP_HU`."""
    values = rng.standard_normal(shape, dtype=np.float32) * np.float32(NOISE_SIGMA_HU)
    np.clip(values, -NOISE_CLIP_HU, NOISE_CLIP_HU, out=values)
    return np.rint(values).astype(np.int16)
