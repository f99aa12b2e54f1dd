"""`make demo`: a phantom 4D-CT scan through everything that is built, printing where results are.

Until the local stack (the workflow issue) exists, the steps run one after the other as a user
would type them: phantom -> upload (the device uploader over HTTP to the upload API on an embedded
moto) -> validate -> de-identify -> analyze. Each step is the real CLI.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".demo"
DICOMFLOW = [sys.executable, "-m", "dicomflow"]


def step(title: str, args: list[str], *, allow_failure: bool = False) -> int:
    shown = " ".join(shlex.quote(str(a)) for a in ["dicomflow", *args])
    print(f"\n--- {title}\n$ {shown}", flush=True)
    start = time.perf_counter()
    code = subprocess.call([*DICOMFLOW, *args], cwd=ROOT)
    print(f"    ({time.perf_counter() - start:.1f} s, exit {code})", flush=True)
    if code != 0 and not allow_failure:
        sys.exit(f"demo: step '{title}' failed with exit status {code}")
    return code


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    scan, deid, results = OUT / "scan", OUT / "deidentified", OUT / "results"
    key = OUT / "demo.key"
    step(
        "1. a phantom 4D-CT scan (10 breathing phases) with planted patient identity",
        ["phantom", str(scan), "--phases", "10", "--slices", "48", "--size", "256", "--seed", "7"],
    )
    from dicomflow.local.stack import start_upload_stack

    with start_upload_stack() as stack:
        step(
            f"2. upload: the device uploader -> the upload API on {stack.api_url} -> S3/DynamoDB on an "
            "embedded moto (presigned multipart URLs, SHA-256 per part, resumable)",
            ["upload", str(scan), "--api", stack.api_url, "--workers", "4"],
        )
        print(f"    processing hand-offs recorded: {[h.scan_id for h in stack.processor.hand_offs]}")
    step(
        "3. validation: DICOM conformance, the manifest's SHA-256, the scan as a whole",
        [
            "validate",
            str(scan),
            "--manifest",
            str(scan / "manifest.json"),
            "--report",
            str(OUT / "validation.json"),
        ],
    )
    step(
        "4. de-identification: PS3.15 basic profile + lung-analysis options, leak-checked",
        ["deid", str(scan), str(deid), "--key-file", str(key), "--report", str(OUT / "deid.json")],
    )
    step(
        "5. lung analysis (ONNX Runtime): volumes, ventilation, DICOM SEG + SR, PNG preview",
        ["analyze", str(deid), str(results)],
    )
    print("\nResults:")
    for path in sorted(p for p in OUT.rglob("*") if p.is_file() and p.parent in {OUT, results}):
        print(f"  {path.relative_to(ROOT)}")
    print(
        f"\nThe de-identified scan is in {deid.relative_to(ROOT)}/, "
        f"the original in {scan.relative_to(ROOT)}/."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
