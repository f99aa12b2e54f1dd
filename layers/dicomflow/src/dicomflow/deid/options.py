"""The PS3.15 E.3 options, as one immutable value, with the lung-analysis defaults.

Defaults: Retain Longitudinal Temporal Information with Modified Dates, Retain Patient
Characteristics, Retain Device Identity, Clean Descriptors, Retain Safe Private; Retain UIDs off.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from dicomflow.errors import InvalidInputError

#: Safe private attributes (PS3.15 Table E.3.10-1, a subset we are sure of), keyed by
#: (private creator, group, element low byte). Values that survive are still leak-checked.
DEFAULT_SAFE_PRIVATE: frozenset[tuple[str, int, int]] = frozenset(
    {
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
        ("GEMS_PARM_01", 0x0043, 0x39),  # Slop_int_6..9 (b-value)
        ("GEMS_ACQU_01", 0x0019, 0x23),  # Table speed (mm/rotation)
        ("GEMS_ACQU_01", 0x0019, 0x24),  # Mid scan time
        ("GEMS_ACQU_01", 0x0019, 0x27),  # Rotation speed (gantry period)
        ("Philips Imaging DD 001", 0x2001, 0x03),  # Diffusion B-Factor
        ("Philips MR Imaging DD 001", 0x2005, 0xB0),  # Diffusion direction RL
        ("Philips MR Imaging DD 001", 0x2005, 0xB1),  # Diffusion direction AP
        ("Philips MR Imaging DD 001", 0x2005, 0xB2),  # Diffusion direction FH
    }
)

#: Option name -> (DCM code of the De-identification Method Code Sequence, code meaning).
OPTION_CODES: dict[str, tuple[str, str]] = {
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_full_dates": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 E.3 options apply (column names of the generated Table E.1-1 data).

    Examples
    --------
    >>> opts = DeidOptions.from_spec("retain-uids,no-clean-descriptors")
    >>> opts.retain_uids, opts.clean_descriptors, opts.retain_long_modified_dates
    (True, False, True)
    """

    retain_safe_private: bool = True
    retain_uids: bool = False
    retain_device_identity: bool = True
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = True
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = True
    clean_descriptors: bool = True
    clean_structured_content: bool = False
    clean_graphics: bool = False
    safe_private: frozenset[tuple[str, int, int]] = field(default=DEFAULT_SAFE_PRIVATE, repr=False)

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise InvalidInputError("choose full dates or modified dates, not both")

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the options switched on, in code order."""
        return tuple(name for name in OPTION_CODES if getattr(self, name))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.type in ("bool", bool))

    @classmethod
    def from_spec(cls, spec: str | None) -> DeidOptions:
        """Defaults changed by a comma-separated list: ``name`` to switch on, ``no-name`` off
        (dashes or underscores); ``basic`` alone means every option off (Basic Profile only)."""
        opts = cls()
        if not spec:
            return opts
        changes: dict[str, bool] = {}
        for raw in spec.split(","):
            word = raw.strip().lower().replace("-", "_")
            if not word:
                continue
            if word == "basic":
                changes.update({name: False for name in cls.names()})
                continue
            value = not word.startswith("no_")
            name = word.removeprefix("no_")
            if name not in cls.names():
                raise InvalidInputError(
                    f"unknown de-identification option {raw.strip()!r}; known: {', '.join(cls.names())}"
                )
            changes[name] = value
        if changes.get("retain_long_full_dates"):
            changes.setdefault("retain_long_modified_dates", False)
        return replace(opts, **changes)  # type: ignore[arg-type]
