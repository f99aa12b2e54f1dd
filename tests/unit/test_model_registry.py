"""The model: rebuilt byte for byte, its SHA-256 checked before loading, its contract before running."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dicomflow.analysis.model import LoadedModel, default_model, resolve_model
from dicomflow.errors import ConfigurationError, ModelContractError, ModelIntegrityError

ROOT = Path(__file__).resolve().parents[2]


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_model", ROOT / "ml_container/model/build_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_script_rebuilds_the_packaged_model_byte_for_byte(tmp_path: Path) -> None:
    # Given the packaged model and registry
    packaged = default_model()
    # When the script rebuilds them elsewhere
    path = _build_script().write(tmp_path)
    # Then the bytes, the SHA-256 and the registry are identical
    assert path.read_bytes() == packaged.path.read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == packaged.sha256
    assert (tmp_path / "registry.json").read_text() == (packaged.path.parent / "registry.json").read_text()


def test_the_registry_declares_the_contract_that_the_graph_has() -> None:
    spec = default_model()
    graph = onnx.load(str(spec.path)).graph
    assert [i.name for i in graph.input] == [t.name for t in spec.contract.inputs]
    assert [o.name for o in graph.output] == [t.name for t in spec.contract.outputs]
    assert onnx.load(str(spec.path)).opset_import[0].version == 17


def test_a_model_with_the_wrong_sha256_is_refused_before_loading(tmp_path: Path) -> None:
    # Given the packaged model, copied and altered by one byte in its doc string
    data = bytearray(default_model().path.read_bytes())
    index = data.index(b"lung-ventilation-reference 1.0.0")
    data[index] ^= 0x20
    tampered = tmp_path / "model.onnx"
    tampered.write_bytes(bytes(data))
    # When it is configured with the packaged model's SHA-256, Then it is refused, saying why
    with pytest.raises(ModelIntegrityError, match=r"SHA-256 is \w+, but \w+ is configured"):
        LoadedModel(resolve_model(tampered, default_model().sha256))


def test_a_replacement_needs_both_path_and_sha256() -> None:
    with pytest.raises(ConfigurationError, match="path and its expected SHA-256"):
        resolve_model(default_model().path, None)
    with pytest.raises(ConfigurationError, match="64 hexadecimal"):
        resolve_model(default_model().path, "abc")


def _other_contract_model(path: Path) -> str:
    """A valid ONNX model whose input is named differently and whose mask is float: not our contract."""
    hu = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["s", "r", "c"])
    ref = helper.make_tensor_value_info("reference_air_fraction", TensorProto.FLOAT, [])
    mask = helper.make_tensor_value_info("lung_mask", TensorProto.FLOAT, ["s", "r", "c"])
    air = helper.make_tensor_value_info("lung_air_fraction", TensorProto.FLOAT, [])
    vent = helper.make_tensor_value_info("specific_ventilation", TensorProto.FLOAT, ["s", "r", "c"])
    nodes = [
        helper.make_node("Identity", ["image"], ["lung_mask"]),
        helper.make_node("Identity", ["reference_air_fraction"], ["lung_air_fraction"]),
        helper.make_node("Identity", ["image"], ["specific_ventilation"]),
    ]
    graph = helper.make_graph(nodes, "other", [hu, ref], [mask, air, vent])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_a_model_with_another_contract_is_refused_before_running(tmp_path: Path, monkeypatch) -> None:
    # Given a correctly hashed model whose input and output do not match the declared contract
    path = tmp_path / "other.onnx"
    sha = _other_contract_model(path)
    ran = []
    import onnxruntime as ort

    original_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda *a, **k: ran.append(1) or original_run(*a, **k))
    # When it is loaded, Then it is refused, naming every difference, and nothing ran
    with pytest.raises(ModelContractError) as info:
        LoadedModel(resolve_model(path, sha))
    message = str(info.value)
    assert "missing input 'hu'" in message
    assert "unexpected input 'image'" in message
    assert "output 'lung_mask' is tensor(float), declared uint8" in message
    assert ran == []


def test_bytes_that_are_not_onnx_are_a_contract_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelContractError, match="not a loadable ONNX model"):
        LoadedModel(resolve_model(path, hashlib.sha256(b"not a model").hexdigest()))


def test_another_model_with_the_same_contract_is_swapped_in_by_configuration(
    tmp_path: Path, monkeypatch
) -> None:
    # Given the reference model rebuilt with a narrower lung window (a different model, same contract)
    script = _build_script()
    monkeypatch.setattr(script, "LUNG_WINDOW_HU", (-900.0, -400.0))
    path = script.write(tmp_path)
    sha = json.loads((tmp_path / "registry.json").read_text())["models"][0]["sha256"]
    assert sha != default_model().sha256
    hu = np.full((2, 4, 4), -950.0, np.float32)
    hu[:, :2] = -800.0
    # When it is configured by path and SHA-256
    swapped = LoadedModel(resolve_model(path, sha), threads=1)
    reference = LoadedModel(default_model(), threads=1)
    # Then it runs, and its answers are its own
    assert int(swapped.segment(hu).lung_mask.sum()) == 16
    assert int(reference.segment(hu).lung_mask.sum()) == 32
    assert swapped.spec.version == f"sha256:{sha[:12]}"


def test_ventilation_follows_tissue_mass_conservation() -> None:
    # Given a region at -700 HU at expiration (air fraction 0.7) and -760 HU at inspiration
    model = LoadedModel(default_model(), threads=1)
    exhale = np.full((6, 6, 6), -700.0, np.float32)
    inhale = np.full((6, 6, 6), -760.0, np.float32)
    reference = model.segment(exhale).lung_air_fraction
    out = model.segment(inhale, reference_air_fraction=reference)
    # Then SV = (0.76 - 0.70) / (1 - 0.76) = 0.25: the tissue's volume grew by a quarter
    assert reference == pytest.approx(0.7, abs=1e-6)
    assert out.specific_ventilation is not None
    np.testing.assert_allclose(out.specific_ventilation, 0.25, rtol=1e-4)
    # and without a reference, no ventilation map is computed
    assert model.segment(inhale).specific_ventilation is None
