"""The workflow's pure parts, no AWS: event models, reasons from caught errors, the sampled pixel
proof, the stored manifest's keys, and the translation of KMS and EventBridge failures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from dicomflow.deid.stream import SAMPLE_WINDOW, _sampled_proof, _windows
from dicomflow.errors import ConfigurationError, InvalidInputError, TransientStorageError
from dicomflow.storage import LocalObjectStore
from dicomflow.workflow.context import TransientKmsKey
from dicomflow.workflow.events import StatusEvents
from dicomflow.workflow.models import BatchEvent, QuarantineEvent, log_fields
from dicomflow.workflow.quarantine import error_reason
from dicomflow.workflow.work import load_manifest

MiB = 1024 * 1024


def _manifest(files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"device_id": "ct-01", "scan_type": "4d-ct", "files": files}


def test_a_batch_event_is_parsed_in_index_order() -> None:
    items = [{"index": i, "key": f"scans/s/files/{i:05d}", "size": 10, "sha256": "a" * 64} for i in (4, 3)]
    event = BatchEvent.parse(
        {"Items": items, "BatchInput": {"scan_id": "s", "bucket": "b", "output_bucket": "o"}}
    )
    assert event.first == 3 and [i.index for i in event.items] == [3, 4] and event.output_bucket == "o"


_ITEM = {"index": 0, "key": "k", "size": 1, "sha256": "a" * 64}


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"Items": [], "BatchInput": {"scan_id": "s", "bucket": "b"}}, "empty Items"),
        ({"Items": [{"index": 0}], "BatchInput": {"scan_id": "s", "bucket": "b"}}, "without index"),
        ({"Items": [{"index": 0}]}, "lacks BatchInput"),
        ({"Items": [_ITEM], "BatchInput": {"scan_id": "../etc", "bucket": "b"}}, "scan_id must be"),
    ],
)
def test_a_malformed_batch_event_is_refused_naming_the_field(event: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInputError, match=says) as caught:
        BatchEvent.parse(event)
    assert "etc" not in str(caught.value)


def test_quarantine_takes_only_rejected_or_failed() -> None:
    with pytest.raises(InvalidInputError, match="outcome"):
        QuarantineEvent.parse({"scan_id": "s", "bucket": "b", "manifest_key": "m", "outcome": "COMPLETED"})
    event = QuarantineEvent.parse({"scan_id": "s", "bucket": "b", "manifest_key": "m", "outcome": "FAILED"})
    assert event.codes == () and event.error is None and event.report_key is None


def test_a_caught_error_keeps_dicomflows_message_and_only_the_class_of_others() -> None:
    ours = json.dumps(
        {"errorType": "TransientStorageError", "errorMessage": "S3 get failed (SlowDown); retry"}
    )
    assert error_reason({"Error": "TransientStorageError", "Cause": ours})["reason"].startswith(
        "S3 get failed"
    )
    theirs = json.dumps({"errorType": "ValueError", "errorMessage": "Doe^Jane is not a number"})
    assert error_reason({"Error": "ValueError", "Cause": theirs}) == {
        "error": "ValueError",
        "reason": "unexpected ValueError",
    }
    ecs = {"Error": "States.TaskFailed", "Cause": '{"Containers": [{"Environment": "Doe^Jane"}]}'}
    assert "Doe" not in json.dumps(error_reason(ecs))
    assert (
        error_reason({"Error": "Lambda.Unknown", "Cause": "not json"})["reason"]
        == "unexpected Lambda.Unknown"
    )


def test_log_fields_keep_counts_and_codes_only() -> None:
    result = {
        "accepted": False,
        "report_key": "scans/s/work/v.json",
        "rejected_files": [1, 2],
        "codes": ["X"],
    }
    assert log_fields(result) == {"accepted": False, "codes": ["X"], "rejected_files": 2}


def test_the_stored_manifests_keys_come_from_the_key_field_or_the_old_layout(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    files = [
        {"name": "a/one.dcm", "size": 1, "sha256": "a" * 64, "key": "scans/s/files/00000"},
        {"name": "a/two.dcm", "size": 2, "sha256": "b" * 64},
    ]
    store.put("m.json", json.dumps(_manifest(files)).encode())
    stored = load_manifest(store, "m.json", "s")
    assert [i.key for i in stored.items] == ["scans/s/files/00000", "scans/s/files/a/two.dcm"]
    assert [f.name for f in stored.indexed().files] == ["00000", "00001"]


def test_windows_cover_both_sides_of_every_cut_and_stay_in_range() -> None:
    windows = _windows(100, 100 + 40 * MiB, [100 + 5 * MiB, 100 + 20 * MiB])
    assert windows[0][0] == 100 and windows[-1][1] == 100 + 40 * MiB
    assert all(lo < hi for lo, hi in windows) and windows == sorted(windows)
    for cut in (100 + 5 * MiB, 100 + 20 * MiB):
        assert any(lo <= cut - SAMPLE_WINDOW and cut + SAMPLE_WINDOW <= hi for lo, hi in windows)
    assert sum(hi - lo for lo, hi in windows) <= 2 * SAMPLE_WINDOW * 12


_HEADER, _TRAILING = b"H" * 300, b"T" * 10


def _prepared(pixels: bytes) -> Any:
    """What the proof reads of a prepared file: source pixels at 200, the new header and trailer."""
    return SimpleNamespace(
        pixel_start=200,
        pixel_end=200 + len(pixels),
        pixel_length=len(pixels),
        new_header=_HEADER,
        new_trailing=_TRAILING,
    )


def _proof(tmp_path: Path, output_pixels: bytes, pixels: bytes) -> tuple[str, str]:
    store = LocalObjectStore(tmp_path)
    store.put("src", b"h" * 200 + pixels + _TRAILING)
    store.put("out", _HEADER + output_pixels + _TRAILING)
    return _sampled_proof(store, "src", store, "out", _prepared(pixels), [200 + 5 * MiB], None)


def test_the_sampled_proof_agrees_on_a_faithful_copy_and_catches_a_shifted_one(tmp_path: Path) -> None:
    pixels = bytes(range(251)) * (12 * MiB // 251)
    before, after = _proof(tmp_path, pixels, pixels)
    assert before == after
    # The second part copied from two bytes too far on: same size, different bytes at the cut
    shifted = pixels[: 5 * MiB] + pixels[5 * MiB + 2 :] + pixels[:2]
    before, after = _proof(tmp_path, shifted, pixels)
    assert before != after
    # A part lost: the size differs
    before, after = _proof(tmp_path, pixels[: 5 * MiB] + pixels[5 * MiB : 11 * MiB], pixels)
    assert before != after


class _NoSizeStore(LocalObjectStore):
    """Refuses to be asked an object's size (a HEAD over S3)."""

    def size(self, key: str) -> int:
        raise AssertionError(f"size({key!r}) asked")


def _in_memory_proof(tmp_path: Path, output: bytes, pixels: bytes) -> tuple[str, str]:
    store = _NoSizeStore(tmp_path)
    store.put("out", output)
    return _sampled_proof(store, "src", store, "out", _prepared(pixels), [], pixels)


def test_the_proof_of_a_file_written_whole_reads_it_back_once_and_asks_no_size(tmp_path: Path) -> None:
    pixels = bytes(range(251)) * 2000
    header, trailing = _HEADER, _TRAILING
    before, after = _in_memory_proof(tmp_path, header + pixels + trailing, pixels)
    assert before == after
    # A changed pixel, a byte too many, a byte too few: each fails the proof
    changed = bytearray(pixels)
    changed[1000] ^= 0xFF
    for output in (header + bytes(changed) + trailing, header + pixels + trailing + b"x", header + pixels):
        before, after = _in_memory_proof(tmp_path, output, pixels)
        assert before != after


class _FailingKms:
    def __init__(self, code: str) -> None:
        self.code = code

    def generate_mac(self, **_: Any) -> Any:
        raise ClientError({"Error": {"Code": self.code, "Message": "m"}}, "GenerateMac")


def test_kms_throttling_is_transient_and_a_refused_key_is_configuration() -> None:
    with pytest.raises(TransientStorageError, match="ThrottlingException"):
        TransientKmsKey("k", _FailingKms("ThrottlingException")).mac(b"uid:1")
    with pytest.raises(ConfigurationError, match="AccessDeniedException"):
        TransientKmsKey("k", _FailingKms("AccessDeniedException")).mac(b"uid:1")


class _Bus:
    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries += Entries
        return self.response


def test_a_status_event_has_the_contracts_shape_and_a_refused_one_is_retried() -> None:
    bus = _Bus({"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]})
    StatusEvents(bus, "b").publish("s", "VALIDATING", "UPLOADED", "2026-01-01T00:00:00Z", ["X"])
    entry = bus.entries[0]
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"]) == (
        "dicomflow",
        "Scan Status Changed",
        "b",
    )
    assert json.loads(entry["Detail"]) == {
        "scan_id": "s",
        "status": "VALIDATING",
        "previous": "UPLOADED",
        "at": "2026-01-01T00:00:00Z",
        "codes": ["X"],
    }
    refused = _Bus({"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException"}]})
    with pytest.raises(TransientStorageError):
        StatusEvents(refused, "b").publish("s", "FAILED", "ANALYZING", "t")
