"""The workflow's S3 de-identifier on one 1 GB enhanced multi-frame file (issue 13): bytes read from
the source, bytes S3 copied itself (UploadPartCopy), and whether the output's pixel data is
byte-identical to the input's.

Runs :func:`dicomflow.workflow.measure.deidentify_multiframe_in_moto`: the workflow's own per-file
step (header by ranged GETs, new header + the first 5 MiB of pixels as part 1, the rest copied
server side, the sampled pixel proof) against moto in this process, on a phantom of 2000 frames of
512 x 512 (``BENCH_DEID_S3_FRAMES`` changes it). The peer is the object itself: a de-identifier
that downloads the file reads all of it, so the ratio is bytes read over the file's size. The
pixel data is compared in full afterwards, outside the counted reads.
"""

from __future__ import annotations

import os

from common import WORK, header, record

FRAMES = int(os.environ.get("BENCH_DEID_S3_FRAMES", "2000"))
MiB = 1024 * 1024
LIMIT = 16 * MiB  # issue 13: at most 16 MiB of the source read, whatever the file's size
ROW = "de-identify one 1 GB enhanced multi-frame file S3 to S3 (the workflow's step, moto)"


def main() -> int:
    from dicomflow.workflow.measure import deidentify_multiframe_in_moto

    header(f"deid S3 to S3: one enhanced multi-frame file, {FRAMES} frames of 512^2, in moto")
    figures = deidentify_multiframe_in_moto(WORK / "deid-s3", frames=FRAMES, size=512)
    size, read = figures["file_bytes"], figures["source_bytes_read"]
    pixels = figures["pixel_bytes"]
    print(f"  file                        {size / MiB:9.1f} MiB ({pixels / MiB:.1f} MiB pixels)")
    print(
        f"  read from the source        {read / MiB:9.2f} MiB  ({read / size:.4f}x the file; limit "
        f"{LIMIT / MiB:.0f} MiB)"
    )
    print(f"  copied by S3 (UploadPartCopy) {figures['bytes_copied_server_side'] / MiB:7.1f} MiB")
    print(
        f"  verdict {figures['verdict']}, pixel proof {figures['pixel_proof']}, output pixel data "
        f"byte-identical: {figures['pixels_identical']}; {figures['seconds']:.1f} s in moto"
    )
    met = figures["verdict"] == "passed" and figures["pixels_identical"] is True and read <= LIMIT
    print(f"  target: at most {LIMIT / MiB:.0f} MiB read and pixels identical: {'met' if met else 'NOT MET'}")
    if FRAMES == 2000:
        record(
            ROW,
            ours=(
                f"{read / MiB:.2f} MiB read of {size / MiB:.0f} MiB; "
                f"{figures['bytes_copied_server_side'] / MiB:.0f} MiB copied by S3; "
                f"pixel data byte-identical: {figures['pixels_identical']}"
            ),
            peer=f"downloading the object: {size / MiB:.0f} MiB read",
            ratio=f"{read / size:.4f}x the bytes read",
            target="<= 16 MiB read, pixels byte-identical",
            met=met,
            detail=f"{figures['seconds']:.1f} s in moto (in process), pixel proof {figures['pixel_proof']}",
        )
    return 0 if met else 1
