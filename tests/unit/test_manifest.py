"""The scan manifest refuses what a careless or hostile device could send, with precise messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomflow.errors import ManifestError
from dicomflow.manifest import (
    DeviceSettings,
    ManifestFile,
    ManifestLimits,
    ScanManifest,
    ScanType,
    check_relative_name,
    files_from_directory,
    sha256_file,
)

SHA = "ab" * 32


def manifest_dict(**overrides):
    data = {
        "device_id": "ct-lung-01",
        "scan_type": "4d-ct",
        "device_settings": {"phases": 10, "slices_per_phase": 150, "voxel_size_mm": [0.78, 0.78, 2.0]},
        "files": [
            {"name": "phase_00/slice_0000.dcm", "size": 526_000, "sha256": SHA},
            {"name": "phase_00/slice_0001.dcm", "size": 526_000, "sha256": SHA},
        ],
    }
    data.update(overrides)
    return data


def test_valid_manifest_round_trips_through_json():
    # Given a well-formed manifest
    manifest = ScanManifest.from_dict(manifest_dict())
    # When it is written and read back with a server-assigned scan id
    again = ScanManifest.from_json(manifest.with_scan_id("scan-123").to_json())
    # Then nothing is lost
    assert again.scan_id == "scan-123"
    assert again.files == manifest.files
    assert again.scan_type is ScanType.FOUR_D_CT
    assert again.device_settings.voxel_size_mm == (0.78, 0.78, 2.0)
    assert again.total_size == 1_052_000


@pytest.mark.parametrize(
    "name",
    [
        "../x.dcm",
        "a/../../etc/passwd",
        "/etc/passwd",
        "C:/Windows/x.dcm",
        "c:x.dcm",
        "a\\b.dcm",
        "a//b.dcm",
        "./a.dcm",
        "a/./b.dcm",
        "a/",
        "",
        "a\x00b.dcm",
        "line\nbreak.dcm",
        "a/ b.dcm",
        "dots.",
        "x" * 256,
        "what?.dcm",
    ],
)
def test_hostile_names_are_refused_without_echoing_them(name):
    # Given a manifest whose second file has a hostile name
    data = manifest_dict()
    data["files"][1]["name"] = name
    # When it is parsed, Then it is refused, pointing at the file by index, never echoing the name
    with pytest.raises(ManifestError, match=r"files\[1\]\.name") as info:
        ScanManifest.from_dict(data)
    if len(name) > 3:
        assert name not in str(info.value)


@pytest.mark.parametrize(
    ("size", "message"),
    [(0, ">= 1"), (-5, ">= 1"), (1.5, "whole number"), (True, "whole number"), ("10", "whole number")],
)
def test_bad_sizes_are_refused(size, message):
    data = manifest_dict()
    data["files"][0]["size"] = size
    with pytest.raises(ManifestError, match=rf"files\[0\]\.size.*{message}"):
        ScanManifest.from_dict(data)


def test_limits_on_file_size_count_and_total():
    limits = ManifestLimits(max_files=2, max_file_size=1000, max_total_size=1500)
    ok = [{"name": f"f{i}.dcm", "size": 700, "sha256": SHA} for i in range(2)]
    with pytest.raises(ManifestError, match="the scan has 3 files, over the limit of 2; split it"):
        ScanManifest.from_dict(manifest_dict(files=[*ok, ok[0] | {"name": "f2.dcm"}]), limits=limits)
    with pytest.raises(ManifestError, match=r"files\[0\]\.size is 1001 bytes, over the limit of 1000"):
        ScanManifest.from_dict(
            manifest_dict(files=[{"name": "a", "size": 1001, "sha256": SHA}]), limits=limits
        )
    with pytest.raises(ManifestError, match="totals 1600 bytes, over the limit of 1500"):
        ScanManifest.from_dict(
            manifest_dict(files=[{"name": f"f{i}", "size": 800, "sha256": SHA} for i in range(2)]),
            limits=limits,
        )


@pytest.mark.parametrize("names", [("a.dcm", "a.dcm"), ("A.dcm", "a.dcm"), ("p/x.dcm", "P/X.DCM")])
def test_duplicate_names_are_refused_ignoring_case(names):
    files = [{"name": n, "size": 1, "sha256": SHA} for n in names]
    with pytest.raises(ManifestError, match=r"files\[1\]\.name repeats files\[0\]\.name"):
        ScanManifest.from_dict(manifest_dict(files=files))


def test_a_file_cannot_also_be_a_folder():
    files = [{"name": "a", "size": 1, "sha256": SHA}, {"name": "a/b.dcm", "size": 1, "sha256": SHA}]
    with pytest.raises(ManifestError, match=r"files\[0\]\.name is also a folder of files\[1\]\.name"):
        ScanManifest.from_dict(manifest_dict(files=files))


@pytest.mark.parametrize("sha", ["", "ab" * 31, "zz" * 32, None, 5, "ab" * 33])
def test_bad_sha256_is_refused(sha):
    data = manifest_dict()
    data["files"][0]["sha256"] = sha
    with pytest.raises(ManifestError, match=r"files\[0\]\.sha256 must be 64 lowercase hexadecimal"):
        ScanManifest.from_dict(data)


def test_upper_case_sha256_is_normalised():
    data = manifest_dict()
    data["files"][0]["sha256"] = SHA.upper()
    assert ScanManifest.from_dict(data).files[0].sha256 == SHA


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scan_type": "mri"}, "scan_type 'mri' is unknown; use one of: 4d-ct, inspiration-hold"),
        ({"device_id": "../dev"}, "device_id must be 1-64 characters"),
        ({"device_id": ""}, "device_id must be"),
        ({"scan_id": "x" * 65}, "scan_id must be"),
        ({"files": []}, "files is empty"),
        ({"files": "a.dcm"}, "files must be a list"),
        ({"files": [["a.dcm", 1, SHA]]}, r"files\[0\] must be an object"),
        ({"files": [{"name": "a.dcm", "size": 1}]}, r"files\[0\] lacks sha256"),
        ({"extra": 1}, "unknown fields: extra"),
        ({"version": 2}, "manifest version 2 is not supported"),
        ({"device_settings": {"phases": 0}}, "device_settings.phases must be a whole number"),
        ({"device_settings": {"voxel_size_mm": [1, 1]}}, "voxel_size_mm must be three numbers"),
        ({"device_settings": {"protocol_duration_s": -1}}, "protocol_duration_s must be a number > 0"),
        ({"device_settings": {"patient_name": "DOE^JOHN"}}, "device_settings has unknown fields"),
    ],
)
def test_malformed_manifests_say_what_is_wrong(overrides, message):
    with pytest.raises(ManifestError, match=message):
        ScanManifest.from_dict(manifest_dict(**overrides))


def test_missing_fields_and_non_json_are_refused():
    data = manifest_dict()
    del data["device_id"]
    with pytest.raises(ManifestError, match="lacks device_id"):
        ScanManifest.from_dict(data)
    with pytest.raises(ManifestError, match="not valid JSON"):
        ScanManifest.from_json(b"{not json")
    with pytest.raises(ManifestError, match="must be a JSON object"):
        ScanManifest.from_json(json.dumps([1, 2]))


def test_scan_type_is_parsed_case_insensitively():
    assert (
        ScanManifest.from_dict(manifest_dict(scan_type="Inspiration-Hold")).scan_type
        is ScanType.INSPIRATION_HOLD
    )


def test_device_settings_round_trip():
    settings = DeviceSettings(protocol_duration_s=12.5, phases=10, matrix=(512, 512))
    assert DeviceSettings.from_dict(settings.to_dict()) == settings


def test_files_from_directory_hashes_streaming_and_skips_hidden(tmp_path):
    # Given a scan folder with nested files, a hidden journal and the manifest itself
    (tmp_path / "phase_00").mkdir()
    (tmp_path / "phase_00" / "a.dcm").write_bytes(b"a" * 10)
    (tmp_path / "b.dcm").write_bytes(b"")
    (tmp_path / ".journal").write_text("x")
    (tmp_path / "manifest.json").write_text("{}")
    # When the file list is built
    files = files_from_directory(tmp_path, exclude=["manifest.json"])
    # Then names are POSIX, sorted, and sizes/hashes are right
    assert [f.name for f in files] == ["b.dcm", "phase_00/a.dcm"]
    assert files[1] == ManifestFile("phase_00/a.dcm", 10, sha256_file(tmp_path / "phase_00" / "a.dcm"))
    assert files[1].sha256 == "bf2cb58a68f684d95a3b78ef8f661c9a4e5b09e82cc8f9cc88cce90528caeb27"


@given(st.text(min_size=1, max_size=80))
def test_any_accepted_name_stays_inside_the_scan_folder(name):
    # Property: whatever string is accepted as a name, it is relative and cannot climb out.
    try:
        check_relative_name(name)
    except ManifestError:
        return
    parts = name.split("/")
    assert not name.startswith("/") and ".." not in parts and "" not in parts and "\\" not in name
