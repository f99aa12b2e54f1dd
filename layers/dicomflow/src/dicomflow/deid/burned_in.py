"""Burned-in annotation: pixels that may show patient text are held for review, never passed on.

A header-only de-identifier cannot clean pixels, so it must not pass an image that may carry text in
them. Held: Burned In Annotation = YES; and, whatever that attribute says (it is often absent or
wrong on these), SOP classes and modalities known to carry text in pixels: secondary capture,
ultrasound, video/visible light photography, documents, and screen-capture modalities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: SOP classes whose images commonly carry burned-in text.
RISKY_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color Secondary Capture
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume Storage
        "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.1.1",  # Video Endoscopic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA Storage
    }
)
RISKY_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM", "DOC", "VL"})


def burned_in_reasons(ds: Dataset) -> list[str]:
    """Why ``ds`` (the original header) must be held for review; empty if it need not be.

    Examples
    --------
    >>> from pydicom.dataset import Dataset
    >>> ds = Dataset()
    >>> ds.Modality, ds.BurnedInAnnotation = "CT", "YES"
    >>> burned_in_reasons(ds)
    ['BurnedInAnnotation is YES']
    >>> ds.BurnedInAnnotation = "NO"
    >>> burned_in_reasons(ds)
    []
    """
    try:
        burned = str(ds.get("BurnedInAnnotation", "") or "")
        sop_class = str(ds.get("SOPClassUID", "") or "")
        modality = str(ds.get("Modality", "") or "")
    except Exception:  # noqa: BLE001 - undecodable values: hold rather than guess
        return ["burned-in annotation attributes cannot be decoded"]
    return burned_in_reasons_for(burned, sop_class, modality)


def burned_in_reasons_for(burned_in_annotation: str, sop_class: str, modality: str) -> list[str]:
    """:func:`burned_in_reasons` from the three values as text (the byte-level engine's way in).

    Examples
    --------
    >>> burned_in_reasons_for("NO", "1.2.840.10008.5.1.4.1.1.7", "OT")[0]
    'SOP class 1.2.840.10008.5.1.4.1.1.7 commonly carries text in its pixels'
    """
    reasons: list[str] = []
    burned = burned_in_annotation.strip().upper()
    sop_class = sop_class.strip("\0 ")
    modality = modality.strip().upper()
    if burned == "YES":
        reasons.append("BurnedInAnnotation is YES")
    if sop_class in RISKY_SOP_CLASSES:
        reasons.append(f"SOP class {sop_class} commonly carries text in its pixels")
    if modality in RISKY_MODALITIES:
        reasons.append(f"modality {modality} commonly carries text in its pixels")
    return reasons
