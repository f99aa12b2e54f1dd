"""The model registry and loading: SHA-256 checked before loading, contract checked before running.

The packaged reference model and its declared contract live in ``analysis/models/registry.json``.
A registry entry may also declare that the model can be run on parts of a phase (``tiling``, see
:class:`Tiling`); a model that does not say so (any replacement configured by path and SHA-256) is
run on whole phases, as the contract alone allows.
Any other ONNX file can replace it by configuration (a path and its expected SHA-256): it is refused
with :class:`~dicomflow.errors.ModelIntegrityError` if its bytes are not the ones configured, and with
:class:`~dicomflow.errors.ModelContractError` if its inputs or outputs (names, element types, ranks)
are not the declared contract, before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dicomflow.errors import ConfigurationError, ModelContractError, ModelIntegrityError

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)", "int16": "tensor(int16)"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the contract: name, element type, shape (named dims are dynamic)."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    unit: str = ""
    description: str = ""

    @property
    def rank(self) -> int:
        return len(self.shape)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            shape=tuple(data.get("shape", ())),
            unit=str(data.get("unit", "")),
            description=str(data.get("description", "")),
        )


@dataclass(frozen=True)
class ModelContract:
    """The declared inputs and outputs a model must expose."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelContract:
        return cls(
            inputs=tuple(TensorSpec.from_dict(d) for d in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(d) for d in data["outputs"]),
        )

    def violations(self, inputs: list[Any], outputs: list[Any]) -> list[str]:
        """What differs between this contract and a session's ``get_inputs()``/``get_outputs()``."""
        problems: list[str] = []
        for kind, declared, actual in (("input", self.inputs, inputs), ("output", self.outputs, outputs)):
            by_name = {a.name: a for a in actual}
            expected_names = {d.name for d in declared}
            for extra in sorted(set(by_name) - expected_names):
                problems.append(f"unexpected {kind} {extra!r}")
            for spec in declared:
                got = by_name.get(spec.name)
                if got is None:
                    problems.append(f"missing {kind} {spec.name!r}")
                    continue
                if got.type != _ORT_TYPES.get(spec.dtype, spec.dtype):
                    problems.append(f"{kind} {spec.name!r} is {got.type}, declared {spec.dtype}")
                rank = None if got.shape is None else len(got.shape)
                # Outputs of a data-dependent branch may have no static shape; inputs must.
                if rank is not None and rank != spec.rank and not (kind == "output" and rank == 0):
                    problems.append(f"{kind} {spec.name!r} has rank {rank}, declared {spec.rank}")
        return problems


@dataclass(frozen=True)
class Tiling:
    """What a registry entry declares about its graph so that a phase may be run in parts.

    ``ventilation_halo_voxels`` = h declares that (1) ``lung_mask`` and the terms of
    ``lung_air_fraction`` are per voxel: a slab's mask is the phase's mask there, and the phase's
    air fraction is the lung-voxel-weighted mean of its slabs'; (2) both ventilation maps at a voxel
    depend only on the input within h voxels of it (a 3 x 3 x 3 filter: 1); (3) every map is 0
    outside the lung mask, as the contract says. Then a phase runs in slabs of slices, and the
    ventilation on the lungs' bounding box (plus h), in slabs overlapping by h, with the same result.
    """

    ventilation_halo_voxels: int
    #: Voxels of input per run: small enough that onnxruntime's intermediates (4 MiB a float32
    #: tensor) come from the heap, reused, and stay in the caches. Measured on 2 cores, a 150 x 512^2
    #: phase: in one run 0.20 s, in slabs of 2^22 voxels 0.04-0.26 s (slow until glibc's mmap
    #: threshold has risen above the tensors' size), of 2^20 voxels 0.03 s; the ventilation
    #: 0.73 s in one run, 0.07 s in slabs of 2^20 voxels of the lungs' box.
    slab_voxels: int = 1 << 20

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Tiling | None:
        declared = parameters.get("tiling")
        if not isinstance(declared, Mapping):
            return None
        halo = declared.get("ventilation_halo_voxels")
        if not isinstance(halo, int) or isinstance(halo, bool) or halo < 0:
            raise ConfigurationError("a model's tiling must declare ventilation_halo_voxels >= 0")
        return cls(ventilation_halo_voxels=halo)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: its file, the SHA-256 it must have, its name, version and contract."""

    path: Path
    sha256: str
    name: str
    version: str
    contract: ModelContract
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256.lower()):
            raise ConfigurationError("the model's expected SHA-256 must be 64 hexadecimal characters")
        object.__setattr__(self, "sha256", self.sha256.lower())

    def replaced_by(
        self, path: str | os.PathLike[str], sha256: str, *, version: str | None = None
    ) -> ModelSpec:
        """Another ONNX file with the same declared contract (configuration: path + SHA-256)."""
        return ModelSpec(
            path=Path(path),
            sha256=sha256,
            name=Path(path).stem[:48] or "model",
            version=version or f"sha256:{sha256[:12]}",
            contract=self.contract,
            parameters={},
        )


def _packaged_registry() -> dict[str, Any]:
    text = resources.files("dicomflow.analysis").joinpath("models/registry.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def default_model() -> ModelSpec:
    """The packaged reference model (``analysis/models``).

    Examples
    --------
    >>> spec = default_model()
    >>> spec.name, [i.name for i in spec.contract.inputs]
    ('lung-ventilation-reference', ['hu', 'reference_air_fraction'])
    """
    registry = _packaged_registry()
    entry = next(m for m in registry["models"] if m["name"] == registry["default"])
    folder = Path(str(resources.files("dicomflow.analysis").joinpath("models")))
    return ModelSpec(
        path=folder / entry["file"],
        sha256=entry["sha256"],
        name=entry["name"],
        version=entry["version"],
        contract=ModelContract.from_dict(entry["contract"]),
        parameters=entry.get("parameters", {}),
    )


def resolve_model(path: str | os.PathLike[str] | None = None, sha256: str | None = None) -> ModelSpec:
    """The packaged model, or the file at ``path`` that must have ``sha256`` (both or neither)."""
    if path is None and sha256 is None:
        return default_model()
    if path is None or not sha256:
        raise ConfigurationError("a replacement model needs both its path and its expected SHA-256")
    return default_model().replaced_by(path, sha256)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's limit narrows),
    not the host's count.

    Examples
    --------
    >>> available_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class LoadedModel:
    """An onnxruntime CPU session of a model whose bytes and contract were checked.

    Examples
    --------
    >>> model = LoadedModel(default_model(), threads=1)
    >>> hu = np.full((4, 8, 8), 40.0, np.float32); hu[1:3, 2:6, 2:6] = -750.0
    >>> out = model.segment(hu)
    >>> int(out.lung_mask.sum()), round(out.lung_air_fraction, 3)
    (32, 0.75)
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        self.spec = spec
        self.tiling = Tiling.from_parameters(spec.parameters)
        self._input: np.ndarray | None = None  # the float32 slab buffer, reused from run to run
        try:
            data = spec.path.read_bytes()
        except OSError as exc:
            raise ModelIntegrityError(f"the model file cannot be read ({exc.__class__.__name__})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            raise ModelIntegrityError(
                f"model {spec.name} refused: its SHA-256 is {digest}, but {spec.sha256} is configured; "
                "rebuild it or configure the SHA-256 of the file you mean to run"
            )
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or available_cores()
        options.inter_op_num_threads = 1
        # No arena: a whole phase's intermediates (hundreds of MB at 512^2 x 150, for a model run on
        # whole phases) go back to the system after each run instead of staying reserved for the
        # process's lifetime. A tiled model's slabs are small enough for the heap to reuse anyway.
        options.enable_cpu_mem_arena = False
        try:
            # Created from the bytes just hashed, so the file cannot change between check and load.
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelContractError(
                f"model {spec.name} is not a loadable ONNX model ({exc.__class__.__name__})"
            ) from None
        problems = spec.contract.violations(self.session.get_inputs(), self.session.get_outputs())
        if problems:
            raise ModelContractError(
                f"model {spec.name} refused before running: it does not match the declared contract: "
                + "; ".join(problems)
            )

    @cached_property
    def version(self) -> str:
        return f"{self.spec.name} {self.spec.version}"

    def segment(self, hu: np.ndarray, reference_air_fraction: float | None = None) -> ModelOutput:
        """Run the model on one phase (float32 HU, [slices, rows, columns]).

        Without ``reference_air_fraction`` only the lung mask and mean air fraction are computed;
        with it, the specific ventilation map relative to that (end-expiration) air fraction too.
        """
        reference = -1.0 if reference_air_fraction is None else float(reference_air_fraction)
        feed = {
            "hu": np.ascontiguousarray(hu, dtype=np.float32),
            "reference_air_fraction": np.array(reference, dtype=np.float32),
        }
        names = ["lung_mask", "lung_air_fraction", "specific_ventilation", "voxel_specific_ventilation"]
        mask, air, ventilation, voxel_ventilation = self.session.run(names, feed)
        asked = reference_air_fraction is not None
        return ModelOutput(
            lung_mask=mask,
            lung_air_fraction=float(air),
            specific_ventilation=ventilation if asked else None,
            voxel_specific_ventilation=voxel_ventilation if asked else None,
        )

    def _run(self, hu: np.ndarray, reference: float) -> list[Any]:
        """One run on ``hu`` (any integer or float HU array), converted into a reused float32 buffer."""
        size = hu.size
        if self._input is None or self._input.size < size:
            self._input = np.empty(size, dtype=np.float32)
        feed_hu = self._input[:size].reshape(hu.shape)
        np.copyto(feed_hu, hu, casting="unsafe")
        feed = {"hu": feed_hu, "reference_air_fraction": np.array(reference, dtype=np.float32)}
        names = ["lung_mask", "lung_air_fraction", "specific_ventilation", "voxel_specific_ventilation"]
        outputs: list[Any] = self.session.run(names, feed)
        return outputs

    def _slab_slices(self, rows: int, columns: int) -> int:
        assert self.tiling is not None
        return max(1, self.tiling.slab_voxels // max(1, rows * columns))

    def measure(self, hu: np.ndarray) -> PhaseMeasure:
        """Lung voxels, mean lung air fraction and the lungs' bounding box of one phase (int16 or
        float HU, [slices, rows, columns]): the model in slabs if its registry entry allows it
        (:class:`Tiling`), else on the whole phase.

        Examples
        --------
        >>> model = LoadedModel(default_model(), threads=1)
        >>> hu = np.full((4, 8, 8), 40, np.int16); hu[1:3, 2:6, 2:6] = -750
        >>> m = model.measure(hu)
        >>> m.lung_voxels, round(m.lung_air_fraction, 3), m.box
        (32, 0.75, ((1, 3), (2, 6), (2, 6)))
        """
        if self.tiling is None:
            out = self.segment(hu)
            mask = out.lung_mask
            return PhaseMeasure(int(np.count_nonzero(mask)), out.lung_air_fraction, _box(mask))
        step = self._slab_slices(hu.shape[1], hu.shape[2])
        voxels = 0
        air_sum = 0.0
        slices = np.zeros(hu.shape[0], dtype=bool)
        footprint = np.zeros(hu.shape[1:], dtype=np.uint8)
        for start in range(0, hu.shape[0], step):
            mask, air, _, _ = self._run(hu[start : start + step], -1.0)
            count = int(np.count_nonzero(mask))
            if count:
                voxels += count
                air_sum += float(air) * count
                slices[start : start + step] = mask.reshape(mask.shape[0], -1).max(axis=1) > 0
                np.maximum(footprint, mask.max(axis=0), out=footprint)
        box = None
        if voxels:
            box = (_extent(slices), _extent(footprint.max(axis=1) > 0), _extent(footprint.max(axis=0) > 0))
        return PhaseMeasure(voxels, air_sum / voxels if voxels else 0.0, box)

    def ventilation(self, hu: np.ndarray, reference_air_fraction: float, box: Box) -> VentilationOutput:
        """The lung mask and both specific ventilation maps of one phase, relative to the
        end-expiration air fraction, over ``box`` (the lungs' bounding box, from :meth:`measure`):
        in slabs of the box plus the declared halo if the model allows it, else on the whole
        phase (the maps then cover it all). Outside the box, every map is 0 (the contract)."""
        if self.tiling is None:
            out = self.segment(hu, reference_air_fraction=reference_air_fraction)
            assert out.specific_ventilation is not None and out.voxel_specific_ventilation is not None
            s, r, c = hu.shape
            whole: Box = ((0, s), (0, r), (0, c))
            return VentilationOutput(
                whole, out.lung_mask, out.specific_ventilation, out.voxel_specific_ventilation
            )
        halo = self.tiling.ventilation_halo_voxels
        (s0, s1), (r0, r1), (c0, c1) = box
        # The region run: the box and ``halo`` voxels around it (within the volume).
        er0, er1 = max(0, r0 - halo), min(hu.shape[1], r1 + halo)
        ec0, ec1 = max(0, c0 - halo), min(hu.shape[2], c1 + halo)
        shape = (s1 - s0, r1 - r0, c1 - c0)
        mask = np.empty(shape, dtype=np.uint8)
        regional = np.empty(shape, dtype=np.float32)
        voxel = np.empty(shape, dtype=np.float32)
        step = self._slab_slices(er1 - er0, ec1 - ec0)
        rows, cols = slice(r0 - er0, r1 - er0), slice(c0 - ec0, c1 - ec0)
        for start in range(s0, s1, step):
            stop = min(s1, start + step)
            lo, hi = max(0, start - halo), min(hu.shape[0], stop + halo)
            out_mask, _, out_regional, out_voxel = self._run(
                hu[lo:hi, er0:er1, ec0:ec1], float(reference_air_fraction)
            )
            core = slice(start - lo, stop - lo)
            mask[start - s0 : stop - s0] = out_mask[core, rows, cols]
            regional[start - s0 : stop - s0] = out_regional[core, rows, cols]
            voxel[start - s0 : stop - s0] = out_voxel[core, rows, cols]
        return VentilationOutput(box, mask, regional, voxel)


#: A bounding box: (start, stop) along slices, rows and columns.
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _extent(flags: np.ndarray) -> tuple[int, int]:
    where = np.flatnonzero(flags)
    return (int(where[0]), int(where[-1]) + 1)


def _box(mask: np.ndarray) -> Box | None:
    if not mask.any():
        return None
    return (
        _extent(np.asarray(mask.any(axis=(1, 2)))),
        _extent(np.asarray(mask.any(axis=(0, 2)))),
        _extent(np.asarray(mask.any(axis=(0, 1)))),
    )


@dataclass(frozen=True)
class PhaseMeasure:
    lung_voxels: int
    lung_air_fraction: float
    box: Box | None  # the lungs' bounding box; None without lung


@dataclass(frozen=True)
class VentilationOutput:
    """The model's maps over ``box`` (0 outside it): lung mask and specific ventilation."""

    box: Box
    lung_mask: np.ndarray  # uint8, the box's shape
    specific_ventilation: np.ndarray  # float32, regionally smoothed
    voxel_specific_ventilation: np.ndarray  # float32, per voxel

    def full(self, array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """``array`` (the box's shape) placed in a zero volume of ``shape``."""
        if array.shape == shape:
            return array
        out = np.zeros(shape, dtype=array.dtype)
        (s0, s1), (r0, r1), (c0, c1) = self.box
        out[s0:s1, r0:r1, c0:c1] = array
        return out

    def plane(self, array: np.ndarray, row: int, shape: tuple[int, int, int]) -> np.ndarray:
        """The coronal plane ``row`` of ``array`` placed in the volume of ``shape``: [slices, columns]."""
        if array.shape == shape:
            return array[:, row, :]
        out = np.zeros((shape[0], shape[2]), dtype=array.dtype)
        (s0, s1), (r0, r1), (c0, c1) = self.box
        if r0 <= row < r1:
            out[s0:s1, c0:c1] = array[:, row - r0, :]
        return out


@dataclass(frozen=True)
class ModelOutput:
    lung_mask: np.ndarray
    lung_air_fraction: float
    specific_ventilation: np.ndarray | None  # regionally smoothed
    voxel_specific_ventilation: np.ndarray | None  # per voxel
