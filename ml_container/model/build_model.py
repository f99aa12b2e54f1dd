"""Build the reference lung-ventilation model (ONNX) and its registry entry, reproducibly.

    .venv/bin/python ml_container/model/build_model.py            # writes the packaged model
    .venv/bin/python ml_container/model/build_model.py --out DIR  # writes it elsewhere

The graph is written node by node with the ``onnx`` library at a pinned opset and IR version, with
no timestamps or random names, so a rebuild is byte-identical (a test checks it). What the graph
computes, and what it does not, is in ``MODEL_CARD.md`` next to this script.

Graph, per phase volume ``hu`` (float32, HU, [slices, rows, columns]):

1. ``lung_mask`` = lo <= hu <= hi (the lung window; air at -1000 HU and soft tissue fall outside).
2. air fraction F = clip(-hu / 1000, 0, 1).
3. ``lung_air_fraction`` = mean of F over the lung mask (a scalar).
4. specific ventilation SV = (F - F_ref) / (1 - F), with F_ref the mean lung air fraction of the
   end-expiration phase (input ``reference_air_fraction``): the volume change of a voxel's tissue
   between expiration and this phase, from conservation of tissue mass.
5. ``voxel_specific_ventilation`` = SV per voxel inside the lung (0 outside), and
   ``specific_ventilation`` = SV smoothed regionally inside the lung (a normalised box filter:
   separable AveragePool of SV * mask divided by that of the mask), zero outside the lung.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NAME = "lung-ventilation-reference"
VERSION = "1.0.0"
FILE_NAME = "lung_ventilation_reference_v1.onnx"
OPSET = 17
IR_VERSION = 8
LUNG_WINDOW_HU = (-970.0, -400.0)
SMOOTHING_KERNEL_VOXELS = 3
EPSILON = 1e-3
DEFECT_THRESHOLD_FRACTION = 0.5

PACKAGE_MODELS = (
    Path(__file__).resolve().parents[2] / "layers" / "dicomflow" / "src" / "dicomflow" / "analysis" / "models"
)

#: The declared contract: what any replacement model must expose (names, element types, ranks).
CONTRACT = {
    "inputs": [
        {
            "name": "hu",
            "dtype": "float32",
            "shape": ["slices", "rows", "columns"],
            "unit": "HU",
            "description": "one respiratory phase in Hounsfield units, slices sorted along the normal",
        },
        {
            "name": "reference_air_fraction",
            "dtype": "float32",
            "shape": [],
            "unit": "1",
            "description": "mean lung air fraction of the end-expiration phase; negative: segmentation only",
        },
    ],
    "outputs": [
        {
            "name": "lung_mask",
            "dtype": "uint8",
            "shape": ["slices", "rows", "columns"],
            "unit": "1",
            "description": "1 inside the lungs (airways excluded), 0 elsewhere",
        },
        {
            "name": "lung_air_fraction",
            "dtype": "float32",
            "shape": [],
            "unit": "1",
            "description": "mean air fraction of the lung voxels of this phase",
        },
        {
            "name": "specific_ventilation",
            "dtype": "float32",
            "shape": ["slices", "rows", "columns"],
            "unit": "mL/mL",
            "description": "regional volume change relative to end-expiration, smoothed, 0 outside lungs; "
            "empty [0, 0, 0] when reference_air_fraction < 0",
        },
        {
            "name": "voxel_specific_ventilation",
            "dtype": "float32",
            "shape": ["slices", "rows", "columns"],
            "unit": "mL/mL",
            "description": "the same per voxel, before smoothing, 0 outside lungs; "
            "empty [0, 0, 0] when reference_air_fraction < 0",
        },
    ],
}


def _const(name: str, value: float | list[int], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name=name)


def _smooth(nodes: list[onnx.NodeProto], source: str, out: str) -> None:
    """A separable box filter over the three axes of a [1, 1, S, R, C] tensor."""
    k, r = SMOOTHING_KERNEL_VOXELS, SMOOTHING_KERNEL_VOXELS // 2
    current = source
    for axis in range(3):
        kernel = [1, 1, 1]
        kernel[axis] = k
        pads = [0, 0, 0, 0, 0, 0]
        pads[axis] = pads[axis + 3] = r
        target = out if axis == 2 else f"{out}_axis{axis}"
        nodes.append(
            helper.make_node(
                "AveragePool",
                [current],
                [target],
                name=f"{target}_pool",
                kernel_shape=kernel,
                pads=pads,
                strides=[1, 1, 1],
                count_include_pad=1,
            )
        )
        current = target


def _no_ventilation_branch() -> onnx.GraphProto:
    """Segmentation only (a negative reference): empty [0, 0, 0] maps, nothing computed."""
    empty = numpy_helper.from_array(np.zeros((0, 0, 0), dtype=np.float32), name="empty_map")
    names = ("no_ventilation", "no_voxel_ventilation")
    return helper.make_graph(
        [helper.make_node("Constant", [], [name], name=name, value=empty) for name in names],
        "segmentation_only",
        [],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names],
    )


def _ventilation_branch() -> onnx.GraphProto:
    """SV = (F - F_ref) / (1 - F), smoothed inside the lung. Tissue mass is conserved, so a voxel's
    volume relative to end-expiration is (1 - F_ref) / (1 - F)."""
    n = helper.make_node
    nodes = [
        n("Mul", ["hu", "minus_one_thousandth"], ["air_raw"], name="air_raw"),
        n("Clip", ["air_raw", "zero", "one"], ["air"], name="air_clip"),
        n("Sub", ["air", "reference_air_fraction"], ["air_gain"], name="air_gain"),
        n("Sub", ["one", "air"], ["tissue"], name="tissue"),
        n("Max", ["tissue", "epsilon"], ["tissue_safe"], name="tissue_safe"),
        n("Div", ["air_gain", "tissue_safe"], ["sv_raw"], name="sv_raw"),
        n("Mul", ["sv_raw", "mask_f"], ["sv_in_lung"], name="sv_in_lung"),
        n("Unsqueeze", ["sv_in_lung", "batch_axes"], ["sv_5d"], name="sv_5d"),
        n("Unsqueeze", ["mask_f", "batch_axes"], ["mask_5d"], name="mask_5d"),
    ]
    _smooth(nodes, "sv_5d", "sv_smooth")
    _smooth(nodes, "mask_5d", "mask_smooth")
    nodes += [
        n("Max", ["mask_smooth", "epsilon"], ["mask_smooth_safe"], name="mask_smooth_safe"),
        n("Div", ["sv_smooth", "mask_smooth_safe"], ["sv_normalised"], name="sv_normalised"),
        n("Squeeze", ["sv_normalised", "batch_axes"], ["sv_3d"], name="sv_3d"),
        n("Mul", ["sv_3d", "mask_f"], ["ventilation_map"], name="ventilation_map"),
    ]
    return helper.make_graph(
        nodes,
        "ventilation",
        [],
        [
            helper.make_tensor_value_info("ventilation_map", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("sv_in_lung", TensorProto.FLOAT, None),
        ],
    )


def build() -> onnx.ModelProto:
    """The model, deterministic: same inputs, same bytes."""
    lo, hi = LUNG_WINDOW_HU
    initializers = [
        _const("lung_window_lo", lo),
        _const("lung_window_hi", hi),
        _const("minus_one_thousandth", -1.0 / 1000.0),
        _const("zero", 0.0),
        _const("one", 1.0),
        _const("epsilon", EPSILON),
        _const("batch_axes", [0, 1], np.int64),
        _const("axis_0", [0], np.int64),
        _const("axis_1", [1], np.int64),
        _const("axis_2", [2], np.int64),
    ]
    n = helper.make_node
    nodes = [
        n("GreaterOrEqual", ["hu", "lung_window_lo"], ["above_lo"], name="above_lo"),
        n("LessOrEqual", ["hu", "lung_window_hi"], ["below_hi"], name="below_hi"),
        n("And", ["above_lo", "below_hi"], ["in_window"], name="in_window"),
        n("Cast", ["in_window"], ["lung_mask"], name="lung_mask_cast", to=TensorProto.UINT8),
        n("Cast", ["in_window"], ["mask_f"], name="mask_float_cast", to=TensorProto.FLOAT),
        # Inside the lung window HU is in (-1000, 0), so the air fraction there is -HU / 1000 unclipped.
        n("Mul", ["hu", "mask_f"], ["hu_in_lung"], name="hu_in_lung"),
        # Summed one axis at a time: a single float32 sum over ~10^7 voxels drifts by about 1 %.
        n("ReduceSum", ["hu_in_lung", "axis_2"], ["hu_sum_rows"], name="hu_sum_rows", keepdims=0),
        n("ReduceSum", ["hu_sum_rows", "axis_1"], ["hu_sum_slices"], name="hu_sum_slices", keepdims=0),
        n("ReduceSum", ["hu_sum_slices", "axis_0"], ["hu_sum"], name="hu_sum", keepdims=0),
        n("ReduceSum", ["mask_f", "axis_2"], ["count_rows"], name="count_rows", keepdims=0),
        n("ReduceSum", ["count_rows", "axis_1"], ["count_slices"], name="count_slices", keepdims=0),
        n("ReduceSum", ["count_slices", "axis_0"], ["lung_count"], name="lung_count", keepdims=0),
        n("Max", ["lung_count", "one"], ["lung_count_safe"], name="lung_count_safe"),
        n("Div", ["hu_sum", "lung_count_safe"], ["lung_mean_hu"], name="lung_mean_hu"),
        n("Mul", ["lung_mean_hu", "minus_one_thousandth"], ["lung_air_fraction"], name="lung_air_fraction"),
        n("Less", ["reference_air_fraction", "zero"], ["segmentation_only"], name="segmentation_only"),
        n(
            "If",
            ["segmentation_only"],
            ["specific_ventilation", "voxel_specific_ventilation"],
            name="ventilation_if_asked",
            then_branch=_no_ventilation_branch(),
            else_branch=_ventilation_branch(),
        ),
    ]

    def tensor(spec: dict) -> onnx.ValueInfoProto:
        elem = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8}[spec["dtype"]]
        return helper.make_tensor_value_info(spec["name"], elem, spec["shape"])

    graph = helper.make_graph(
        nodes,
        "lung_ventilation_reference",
        [tensor(s) for s in CONTRACT["inputs"]],
        [tensor(s) for s in CONTRACT["outputs"]],
        initializer=initializers,
        doc_string="Reference lung segmentation (HU window), regional specific ventilation (MODEL_CARD.md)",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="dicomflow ml_container/model/build_model.py",
        producer_version=VERSION,
        model_version=1,
        doc_string=f"{NAME} {VERSION}",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"name": NAME, "version": VERSION})
    onnx.checker.check_model(model, full_check=True)
    return model


def registry_entry(model_bytes: bytes) -> dict:
    return {
        "name": NAME,
        "version": VERSION,
        "file": FILE_NAME,
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "opset": OPSET,
        "parameters": {
            "lung_window_hu": list(LUNG_WINDOW_HU),
            "smoothing_kernel_voxels": SMOOTHING_KERNEL_VOXELS,
            # Post-processing outside the graph (dicomflow.analysis.metrics): a defect is SV below
            # this fraction of the inhale lung's median SV.
            "defect_threshold_fraction": DEFECT_THRESHOLD_FRACTION,
            # What the graph allows the pipeline (dicomflow.analysis.model.Tiling): the mask and the
            # air fraction's terms are per voxel, and each ventilation map at a voxel depends only on
            # the input within one voxel (one 3 x 3 x 3 box filter), so a phase may run in slabs and
            # the ventilation on the lungs' bounding box, with the same result.
            "tiling": {"ventilation_halo_voxels": SMOOTHING_KERNEL_VOXELS // 2},
        },
        "contract": CONTRACT,
    }


def write(out_dir: Path) -> Path:
    """Write the model and ``registry.json`` into ``out_dir``; returns the model's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = build().SerializeToString(deterministic=True)
    path = out_dir / FILE_NAME
    path.write_bytes(data)
    registry = {"default": NAME, "models": [registry_entry(data)]}
    (out_dir / "registry.json").write_text(json.dumps(registry, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=PACKAGE_MODELS, help="output folder (default: the package)"
    )
    args = parser.parse_args(argv)
    path = write(args.out)
    print(f"{path} sha256={hashlib.sha256(path.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
