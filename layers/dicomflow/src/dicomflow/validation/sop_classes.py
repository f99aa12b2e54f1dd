"""Which SOP classes a scan may contain, and which of them are multi-frame.

The pipeline analyses CT volumes, so by default it accepts the CT image storage classes that carry
the Image Plane geometry it needs (position, orientation, spacing):

- CT Image Storage (single-frame, one file per slice);
- Enhanced CT Image Storage (multi-frame, geometry in per-frame functional groups);
- Legacy Converted Enhanced CT Image Storage (the multi-frame form of converted single-frame CT, the
  same functional groups).

Secondary Capture is not accepted by default: it has no Image Plane module (no position, orientation
or frame of reference), so it cannot form a volume, and it is the class screenshots with burned-in
text come in. The pipeline's own outputs (Segmentation, Comprehensive SR) are written after
validation, never fed back into it. The list is configurable (``allowed_sop_classes`` of
:class:`~dicomflow.validation.file_rules.FilePolicy`, ``--allow-sop-class`` on the command line).
"""

from __future__ import annotations

from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

#: SOP classes accepted by default.
DEFAULT_ALLOWED_SOP_CLASSES: frozenset[str] = frozenset(
    {str(CTImageStorage), str(EnhancedCTImageStorage), str(LegacyConvertedEnhancedCTImageStorage)}
)

#: Classes whose geometry sits in per-frame / shared functional groups rather than at the top level.
ENHANCED_MULTIFRAME_SOP_CLASSES: frozenset[str] = frozenset(
    {str(EnhancedCTImageStorage), str(LegacyConvertedEnhancedCTImageStorage)}
)


def sop_class_name(uid: str) -> str:
    """The registered name of a SOP class UID, or ``"unregistered SOP class"``.

    Standard SOP class UIDs are public (PS3.6), never patient data, so they may appear in messages.

    Examples
    --------
    >>> sop_class_name("1.2.840.10008.5.1.4.1.1.2")
    'CT Image Storage'
    >>> sop_class_name("1.2.3.4")
    'unregistered SOP class'
    """
    name = UID(uid).name
    return "unregistered SOP class" if name == str(uid) else name
