"""The container's entry point over S3 (moto in-process): de-identified files in, results out, and a
last JSON line the workflow can read."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import highdicom as hd
import pytest
from moto import mock_aws

from dicomflow.analysis.model import default_model
from dicomflow.manifest import ScanManifest, ScanType, files_from_directory
from tests.unit.test_analysis_volume import write_ct_scan

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("analysis_entrypoint", ROOT / "ml_container/entrypoint.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DICOMFLOW_AWS_ENDPOINT_URL", raising=False)
    from dicomflow.settings import get_settings

    get_settings.cache_clear()
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="deidentified")
        client.create_bucket(Bucket="results")
        scan = tmp_path / "scan"
        write_ct_scan(scan, phases=3, slices=10, size=32)
        manifest = ScanManifest(
            device_id="ct-01",
            scan_type=ScanType.FOUR_D_CT,
            files=files_from_directory(scan),
            scan_id="scan-1",
        )
        for item in manifest.files:
            client.upload_file(str(scan / item.name), "deidentified", f"scans/scan-1/{item.name}")
        client.put_object(
            Bucket="deidentified", Key="scans/scan-1/manifest.json", Body=manifest.to_json().encode()
        )
        yield client
    get_settings.cache_clear()


def _last_json_line(text: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return result


def test_entrypoint_analyses_a_scan_from_s3_into_s3(
    s3: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every size the task asks S3 for counted (a HEAD each)
    from dicomflow.storage.s3 import S3ObjectStore

    asked: list[str] = []
    size = S3ObjectStore.size
    monkeypatch.setattr(S3ObjectStore, "size", lambda self, key: asked.append(key) or size(self, key))
    # When the ECS task's entry point runs with S3 locations
    code = _entrypoint().main(
        [
            "--scan-id",
            "scan-1",
            "--input",
            "s3://deidentified/scans/scan-1/",
            "--manifest",
            "s3://deidentified/scans/scan-1/manifest.json",
            "--output",
            "s3://results/scans/scan-1/analysis/",
            "--threads",
            "1",
        ]
    )
    line = _last_json_line(capsys.readouterr().out)
    # Then it exits 0 and says so in its last line
    assert code == 0, line
    assert line["status"] == "succeeded" and line["scan_id"] == "scan-1"
    # And the files' sizes came from the manifest: no HEAD per scan file
    assert not [k for k in asked if k.endswith(".dcm")], asked
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="results")["Contents"]}
    prefix = "scans/scan-1/analysis/"
    assert keys == {prefix + n for n in ("results.json", "seg.dcm", "sr.dcm", "preview.png")}
    results = json.loads(s3.get_object(Bucket="results", Key=prefix + "results.json")["Body"].read())
    assert results["scan_id"] == "scan-1"
    assert results["tidal_volume_ml"] == pytest.approx(line["tidal_volume_ml"])
    assert line["outputs"]["seg"] == prefix + "seg.dcm"
    seg = hd.seg.Segmentation.from_dataset(
        __import__("pydicom").dcmread(
            io.BytesIO(s3.get_object(Bucket="results", Key=prefix + "seg.dcm")["Body"].read())
        )
    )
    assert {i.SeriesInstanceUID for i in seg.ReferencedSeriesSequence} == {results["source_series"]["inhale"]}


def test_entrypoint_reads_its_locations_from_the_environment_and_a_model_from_s3(
    s3: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the model uploaded to S3 and the task configured by environment only (as ECS does)
    model = default_model()
    s3.put_object(Bucket="results", Key="models/model.onnx", Body=model.path.read_bytes())
    env = {
        "DICOMFLOW_SCAN_ID": "scan-1",
        "DICOMFLOW_INPUT_URI": "s3://deidentified/scans/scan-1",
        "DICOMFLOW_OUTPUT_URI": "s3://results/out/scan-1",
        "DICOMFLOW_MODEL_URI": "s3://results/models/model.onnx",
        "DICOMFLOW_MODEL_SHA256": hashlib.sha256(model.path.read_bytes()).hexdigest(),
        "DICOMFLOW_ANALYSIS_THREADS": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = _entrypoint().main([])
    captured = capsys.readouterr()
    line = _last_json_line(captured.out)
    assert code == 0, captured.err
    assert line["results"] == "out/scan-1/results.json"
    assert line["model"]["sha256"] == model.sha256


def test_a_wrong_model_hash_fails_the_task_with_a_recordable_reason(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _entrypoint().main(
        [
            "--input",
            "s3://deidentified/scans/scan-1/",
            "--output",
            "s3://results/x/",
            "--model",
            str(default_model().path),
            "--model-sha256",
            "f" * 64,
        ]
    )
    line = _last_json_line(capsys.readouterr().out)
    assert code == 1
    assert line["status"] == "failed" and line["error"] == "ModelIntegrityError"
    assert "refused" in line["reason"]
    assert "Contents" not in s3.list_objects_v2(Bucket="results")


def test_a_missing_scan_fails_with_a_reason_and_no_key_in_it(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _entrypoint().main(["--input", "s3://deidentified/scans/nope/", "--output", "s3://results/x/"])
    line = _last_json_line(capsys.readouterr().out)
    assert code == 1
    assert line["status"] == "failed" and line["error"] == "AnalysisError"
    assert "nope" not in line["reason"]  # keys appear as fingerprints only


def test_missing_output_location_is_a_configuration_failure(capsys: pytest.CaptureFixture[str]) -> None:
    code = _entrypoint().main(["--input", "/nonexistent"])
    line = _last_json_line(capsys.readouterr().out)
    assert code == 1 and line["error"] == "ConfigurationError"
    assert "DICOMFLOW_OUTPUT_URI" in line["reason"]
