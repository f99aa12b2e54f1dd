"""A file whose leak check fails never lands in the de-identified bucket.

The workflow's steps are driven in order through their real handlers against moto in-process (the
fixtures and the drive of ``tests/functional/test_workflow_steps.py``). Each case plants, in one
file, an identifying value where the lung-analysis profile KEEPS the element (Retain Device
Identity keeps Station Name and Device Serial Number; Retain Safe Private keeps a safelisted private
element), so only the leak check stands between the value and the de-identified bucket. Then: no
object of that file under any key of the de-identified bucket, the value in no object there, no
de-identified manifest, the scan REJECTED with LEAK_DETECTED naming the file, the original
untouched in the ingest bucket.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pydicom
import pytest

from tests.functional import test_workflow_steps as steps
from tests.functional.test_workflow_steps import DEID, INGEST, Stack, drive, upload

# The steps' fixtures, shared by name (a module-scoped phantom, moto per test)
phantom = steps.phantom
stack = steps.stack

LEAKY = 2  # the file's position in the manifest


def family(stack: Stack) -> str:
    return str(stack.truth["identifying_values"]["PatientName.family"])


def patient_id(stack: Stack) -> str:
    return str(stack.truth["identifying_values"]["PatientID"])


def station_name(ds: pydicom.Dataset, stack: Stack) -> str:
    value = f"{family(stack)} CT"
    ds.StationName = value
    return family(stack)


def device_serial(ds: pydicom.Dataset, stack: Stack) -> str:
    ds.DeviceSerialNumber = patient_id(stack)
    return patient_id(stack)


def safe_private(ds: pydicom.Dataset, stack: Stack) -> str:
    # (0019,xx23) of GEMS_ACQU_01 is on the Retain Safe Private safelist (table speed)
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    block.add_new(0x23, "LO", f"{family(stack)} {patient_id(stack)}")
    return patient_id(stack)


PLANTS: dict[str, Callable[[pydicom.Dataset, Stack], str]] = {
    "station-name-is-the-patients": station_name,
    "device-serial-is-the-mrn": device_serial,
    "safelisted-private-element-holds-the-mrn": safe_private,
}


def leaky_file(stack: Stack, plant: Callable[[pydicom.Dataset, Stack], str]) -> tuple[bytes, str]:
    manifest = json.loads((stack.phantom / "manifest.json").read_text())
    ds = pydicom.dcmread(stack.phantom / manifest["files"][LEAKY]["name"])
    value = plant(ds, stack)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue(), value


def deidentified(stack: Stack) -> dict[str, bytes]:
    return {k: stack.body(DEID, k) for k in stack.keys(DEID)}


@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
def test_a_file_whose_leak_check_fails_never_lands_in_the_deidentified_bucket(
    stack: Stack,
    plant: Callable[[pydicom.Dataset, Stack], str],
) -> None:
    # Given an uploaded scan whose file 2 carries an identifying value in an element the profile keeps
    data, value = leaky_file(stack, plant)
    scan_id = "scan-leak"
    keys = upload(stack, scan_id, replace={LEAKY: data})
    before = {k: (stack.s3.head_object(Bucket=INGEST, Key=k)["ETag"], stack.body(INGEST, k)) for k in keys}
    # When the workflow runs
    run = drive(stack, scan_id)
    # Then the batch counted the file as failed and de-identification did not pass, for a leak
    assert sum(b["failed"] for b in run.batches["deidentify_batch"]) == 1
    assert run.results["deidentify_scan"]["passed"] is False
    assert run.results["deidentify_scan"]["codes"] == ["LEAK_DETECTED"]
    assert run.results["deidentify_scan"]["manifest_key"] is None
    # And the scan is REJECTED with LEAK_DETECTED naming the file by position and key
    assert run.results["quarantine"]["status"] == "REJECTED"
    assert run.results["quarantine"]["reasons"] == [
        {"index": LEAKY, "key": keys[LEAKY], "codes": ["LEAK_DETECTED"]}
    ]
    scan = stack.table.get_scan(scan_id)
    assert scan is not None and scan["status"] == "REJECTED"
    assert f"files[{LEAKY}] LEAK_DETECTED" in scan["reason"]
    assert [h["status"] for h in scan["history"]] == ["UPLOADED", "VALIDATING", "DEIDENTIFYING", "REJECTED"]
    # And nothing of that file is in the de-identified bucket, under any key
    published = deidentified(stack)
    assert f"scans/{scan_id}/{LEAKY:05d}.dcm" not in published
    assert f"scans/{scan_id}/manifest.json" not in published
    leaky_pixels = pydicom.dcmread(io.BytesIO(data)).PixelData
    for key, body in published.items():
        assert value.encode() not in body and value.upper().encode() not in body.upper(), key
        assert pydicom.dcmread(io.BytesIO(body)).PixelData != leaky_pixels, key
    # And it was not held either (held files are for burned-in review, not for leaks)
    assert stack.keys(INGEST, f"scans/{scan_id}/held/") == []
    # And the originals are untouched
    for key, (etag, body) in before.items():
        assert stack.s3.head_object(Bucket=INGEST, Key=key)["ETag"] == etag
        assert stack.body(INGEST, key) == body
    # And the reports and the record say where, never the value
    reports = b"".join(stack.body(INGEST, k) for k in stack.keys(INGEST, f"scans/{scan_id}/work/"))
    assert value.encode() not in reports
    assert value not in str(scan) and value not in str(run.results)


def test_without_the_plant_the_same_file_lands(stack: Stack) -> None:
    # The control: the leak check, not something else, kept file 2 out above
    keys = upload(stack, "scan-clean")
    run = drive(stack, "scan-clean")
    assert run.results["deidentify_scan"]["passed"] is True, run.results
    assert f"scans/scan-clean/{LEAKY:05d}.dcm" in stack.keys(DEID)
    assert len(keys) == len([k for k in stack.keys(DEID) if k.endswith(".dcm")])
