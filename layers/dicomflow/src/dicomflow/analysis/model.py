"""The model registry and loading: SHA-256 checked before loading, contract checked before running.

The packaged reference model and its declared contract live in ``analysis/models/registry.json``.
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
        # No arena: a phase's intermediates (hundreds of MB at 512^2 x 150) go back to the system
        # after each run instead of staying reserved for the process's lifetime.
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


@dataclass(frozen=True)
class ModelOutput:
    lung_mask: np.ndarray
    lung_air_fraction: float
    specific_ventilation: np.ndarray | None  # regionally smoothed
    voxel_specific_ventilation: np.ndarray | None  # per voxel
