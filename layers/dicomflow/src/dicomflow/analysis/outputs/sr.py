"""A TID 1500 Measurement Report of the lung metrics (Comprehensive 3D SR, highdicom).

Lung volume uses SNOMED CT "Volume" (118565006) with UCUM mL. Tidal volume, ventilation defect
percent and ventilation heterogeneity have no code we could cite with confidence, so they carry
private codes of the coding scheme ``99DICOMFLOW`` (a "99" local scheme, as PS3.16 allows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from dicomflow import __version__

MANUFACTURER = "dicomflow"
SCHEME = "99DICOMFLOW"
TIDAL_VOLUME = Code("TIDALVOL", SCHEME, "Tidal volume")
DEFECT_PERCENT = Code("VENTDEFPCT", SCHEME, "Ventilation defect percent")
HETEROGENEITY = Code("VENTHETCV", SCHEME, "Ventilation heterogeneity coefficient of variation")
MILLILITER = Code("mL", "UCUM", "milliliter")
NO_UNITS = Code("1", "UCUM", "no units")
LUNG_VENTILATION_ANALYSIS = Code("LUNGVENT", SCHEME, "4D-CT lung ventilation analysis")


def measurement_report(
    results: Mapping[str, Any], evidence: Sequence[Dataset], *, model_name: str, model_version: str
) -> Dataset:
    """The report: one measurement group per phase (lung volume) and one for ventilation.

    ``results`` is the analysis's results dictionary (as written to results.json); ``evidence`` the
    source datasets (headers are enough) and the SEG.
    """
    import highdicom as hd

    algorithm = hd.sr.AlgorithmIdentification(name=model_name[:64], version=model_version[:64])
    lung_site = [hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)]
    groups: list[Any] = []
    for phase in results["phases"]:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier=f"Lungs, phase {phase['index']}"
                ),
                finding_type=codes.SCT.Lung,
                algorithm_id=algorithm,
                finding_sites=lung_site,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.Volume,
                        value=round(phase["lung_volume_ml"], 3),
                        unit=MILLILITER,
                        algorithm_id=algorithm,
                    )
                ],
            )
        )
    ventilation = results["ventilation"]
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Ventilation"),
            finding_type=codes.SCT.Lung,
            algorithm_id=algorithm,
            finding_sites=lung_site,
            measurements=[
                hd.sr.Measurement(
                    name=TIDAL_VOLUME,
                    value=round(results["tidal_volume_ml"], 3),
                    unit=MILLILITER,
                    algorithm_id=algorithm,
                ),
                hd.sr.Measurement(
                    name=DEFECT_PERCENT,
                    value=round(ventilation["defect_percent"], 3),
                    unit=codes.UCUM.Percent,
                    algorithm_id=algorithm,
                ),
                hd.sr.Measurement(
                    name=HETEROGENEITY,
                    value=round(ventilation["heterogeneity_cv"], 4),
                    unit=NO_UNITS,
                    algorithm_id=algorithm,
                ),
            ],
        )
    )
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(), name=model_name[:64], manufacturer_name=MANUFACTURER
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=LUNG_VENTILATION_ANALYSIS,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=generate_uid(),
        series_number=9002,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="Lung ventilation measurements (dicomflow)",
        software_versions=f"dicomflow {__version__}",
    )


def read_measurements(sr: Dataset) -> dict[str, list[float]]:
    """Every numeric measurement of a report, by ``"<group tracking id>/<concept meaning>"``.

    For re-reading a report (tests, consumers): walks the content tree with pydicom only.
    """
    found: dict[str, list[float]] = {}

    def walk(items: Sequence[Dataset], group: str) -> None:
        for item in items:
            label = group
            children = item.get("ContentSequence", [])
            for child in children:
                if (
                    child.get("ValueType") == "TEXT"
                    and child.ConceptNameCodeSequence[0].CodeValue == "112039"
                ):
                    label = str(child.TextValue)
            if item.get("ValueType") == "NUM":
                meaning = str(item.ConceptNameCodeSequence[0].CodeMeaning)
                value = float(item.MeasuredValueSequence[0].NumericValue)
                found.setdefault(f"{group}/{meaning}", []).append(value)
            walk(children, label)

    walk(sr.get("ContentSequence", []), "")
    return found
