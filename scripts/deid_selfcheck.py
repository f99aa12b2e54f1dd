"""Quick self-check of the streaming claim: ``dicomflow deid`` on a large file beside ``cp``.

Writes a CT file of ``--mb`` megabytes (frames streamed to disk, never held in memory) under
``.bench/deid_selfcheck/``, then runs ``cp`` and ``dicomflow deid`` (with and without the pixel
hashes) as subprocesses and prints wall time and peak RSS (GNU time). Not a test: timings on a
shared machine are noisy; ``make bench`` has the full comparison with the peers.

Usage::

    .venv/bin/python scripts/deid_selfcheck.py --mb 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


def write_big_ct(path: Path, megabytes: int) -> int:
    """A multi-frame CT whose 512x512x16-bit frames are appended one by one."""
    frame = (np.arange(512 * 512, dtype=np.uint32) % 4093).astype(np.uint16).tobytes()
    frames = max(1, megabytes * 1024 * 1024 // len(frame))
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate = "Selfcheck^Patient", "SELF-0001", "20240101"
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "CT", 512, 512, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        ds.SOPClassUID,
        ds.SOPInstanceUID,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    length = len(frame) * frames
    with path.open("ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        for _ in range(frames):
            fh.write(frame)
    return path.stat().st_size


def measure(name: str, cmd: list[str]) -> tuple[float, int]:
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", out.name, *cmd], check=True, stdout=subprocess.DEVNULL
        )
        wall, rss_kb = out.read().split()
    print(f"  {name:28s} wall {float(wall):6.2f} s   peak RSS {int(rss_kb) / 1024:6.1f} MB", flush=True)
    return float(wall), int(rss_kb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of the test file in MB (default 1024)")
    args = parser.parse_args()
    work = ROOT / ".bench" / "deid_selfcheck"
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"ct_{args.mb}mb.dcm"
    if not src.exists():
        print(f"writing {src} ...", flush=True)
        write_big_ct(src, args.mb)
    key = work / "key"
    key.write_text("5a" * 32)
    size_mb = src.stat().st_size / 1e6
    print(f"deid self-check on {size_mb:.0f} MB", flush=True)
    cp_wall, _ = measure("cp", ["cp", str(src), str(work / "cp.dcm")])
    results = {}
    for label, extra in (("dicomflow deid", []), ("dicomflow deid (no hashes)", ["--no-verify-pixels"])):
        out = work / "out.dcm"
        out.unlink(missing_ok=True)
        report = work / "report.json"
        cmd = [
            str(BIN / "dicomflow"),
            "deid",
            str(src),
            str(out),
            "--key-file",
            str(key),
            "--report",
            str(report),
        ]
        results[label] = measure(label, cmd + extra)
        verdict = json.loads(report.read_text())["files"][0]
        print(f"    verdict {verdict['verdict']}, pixels identical {verdict['pixels_identical']}", flush=True)
    for label, (wall, rss) in results.items():
        print(
            f"  {label}: {wall / cp_wall:.2f}x cp wall time, peak RSS {rss / 1024:.0f} MB (target < 100 MB)"
        )
    (work / "cp.dcm").unlink(missing_ok=True)
    (work / "out.dcm").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
