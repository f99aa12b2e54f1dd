"""The phantom's planted identity: realistic, fictional, deterministic for a seed.

Every string a de-identifier must remove is planted here once and reported in
``ground_truth.json["identifying_values"]``; values that the lung-analysis options legitimately keep
(device identity, patient characteristics) are reported apart, in ``retainable_values``, so a leak
test knows which is which. Times of day are planted but not reported: with Modified Dates a
de-identifier may keep them (only the dates move), and a time alone identifies nobody.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_GIVEN = ("JANE", "MARGARET", "ELENA", "OLIVIA", "HENRY", "TOMASZ", "AMARA", "KENJI", "LUCIA", "ROBERT")
_FAMILY = ("WHITFIELD", "OKONKWO", "BRANDSTETTER", "MCALLISTER", "FERREIRA", "LINDQVIST", "HASEGAWA")
_STREETS = ("Larkspur Lane", "Harbour View Road", "Quenby Crescent", "Old Mill Street")
_TOWNS = ("Ashford Vale", "Port Kessington", "Millbrook Heath", "Oakhurst")
_PHYSICIANS = ("ABERNATHY^CLAIRE^DR", "VOSKUIJLEN^PIETER^DR", "NAKAMURA^SATO^DR", "OYELARAN^FEMI^DR")
_OPERATORS = ("PRENDERGAST^LIAM", "ZIELINSKA^AGATA", "DUBOIS^MARC", "KOVACS^EVA")


@dataclass(frozen=True)
class Identity:
    """One fictional patient, visit and site."""

    patient_name: str
    patient_id: str
    issuer_of_patient_id: str
    other_patient_id: str
    birth_date: str
    birth_time: str
    sex: str
    age: str
    size_m: str
    weight_kg: str
    address: str
    telephone: str
    ethnic_group: str
    occupation: str
    history: str
    patient_comments: str
    accession_number: str
    study_id: str
    study_description: str
    study_date: str
    study_time: str
    referring_physician: str
    performing_physician: str
    reading_physician: str
    operator: str
    institution: str
    institution_address: str
    department: str
    station_name: str
    device_serial: str
    ae_title: str
    requested_procedure_id: str
    scheduled_step_id: str
    requested_procedure_description: str
    image_comments: str
    overlay_comment: str
    curve_description: str
    private_note: str

    @property
    def family(self) -> str:
        return self.patient_name.split("^")[0]

    def identifying_values(self) -> dict[str, str]:
        """Every planted string that no de-identified output may contain (label -> value)."""
        return {
            "PatientName": self.patient_name,
            "PatientName.family": self.family,
            "PatientID": self.patient_id,
            "IssuerOfPatientID": self.issuer_of_patient_id,
            "OtherPatientIDsSequence.PatientID": self.other_patient_id,
            "PatientBirthDate": self.birth_date,
            "PatientAddress": self.address,
            "PatientTelephoneNumbers": self.telephone,
            "Occupation": self.occupation,
            "AdditionalPatientHistory": self.history,
            "PatientComments": self.patient_comments,
            "AccessionNumber": self.accession_number,
            "StudyID": self.study_id,
            "StudyDate": self.study_date,
            "ReferringPhysicianName": self.referring_physician,
            "PerformingPhysicianName": self.performing_physician,
            "NameOfPhysiciansReadingStudy": self.reading_physician,
            "OperatorsName": self.operator,
            "InstitutionName": self.institution,
            "InstitutionAddress": self.institution_address,
            "InstitutionalDepartmentName": self.department,
            "SourceApplicationEntityTitle": self.ae_title,
            "RequestAttributesSequence.RequestedProcedureID": self.requested_procedure_id,
            "RequestAttributesSequence.ScheduledProcedureStepID": self.scheduled_step_id,
            "RequestAttributesSequence.RequestedProcedureDescription": self.requested_procedure_description,
            "ImageComments": self.image_comments,
            "Overlay(6000,4000)": self.overlay_comment,
            "Curve(5000,0022)": self.curve_description,
            "private:ACME PATIENT INFO:name": self.patient_name,
            "private:ACME PATIENT INFO:id": self.patient_id,
            "private:ACME PATIENT INFO:birth_date": self.birth_date,
            "private:ACME PATIENT INFO:note": self.private_note,
        }

    def retainable_values(self) -> dict[str, str]:
        """Planted values that the lung-analysis options keep (option -> attribute -> value)."""
        return {
            "DeviceSerialNumber": self.device_serial,  # Retain Device Identity
            "StationName": self.station_name,  # Retain Device Identity
            "PatientSex": self.sex,  # Retain Patient Characteristics
            "PatientAge": self.age,
            "PatientSize": self.size_m,
            "PatientWeight": self.weight_kg,
            "EthnicGroup": self.ethnic_group,
            "StudyDescription": self.study_description,  # Clean Descriptors keeps what is not identifying
        }


def make_identity(seed: int) -> Identity:
    """A deterministic fictional identity for ``seed``.

    Examples
    --------
    >>> make_identity(3) == make_identity(3), make_identity(3) == make_identity(4)
    (True, False)
    """
    rnd = random.Random(f"dicomflow-phantom-identity-{seed}")
    given, family = rnd.choice(_GIVEN), rnd.choice(_FAMILY)
    middle = rnd.choice("ABCDEFGHJKLMNPRSTW")
    year = rnd.randint(1941, 1975)
    birth = f"{year}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
    study = f"2024{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
    mrn = f"MRN{rnd.randint(10_000_000, 99_999_999)}"
    town = rnd.choice(_TOWNS)
    hospital = f"{town} General Hospital"
    phone = f"+44 1632 {rnd.randint(100_000, 999_999)}"
    accession = f"ACC{rnd.randint(1_000_000, 9_999_999)}"
    referring = rnd.choice(_PHYSICIANS)
    return Identity(
        patient_name=f"{family}^{given}^{middle}",
        patient_id=mrn,
        issuer_of_patient_id=f"{town.upper().replace(' ', '_')}_MPI",
        other_patient_id=f"NHS{rnd.randint(100_000_0000, 999_999_9999)}",
        birth_date=birth,
        birth_time=f"{rnd.randint(0, 23):02d}{rnd.randint(0, 59):02d}00",
        sex=rnd.choice(("F", "M")),
        age=f"{2024 - year:03d}Y",
        size_m=f"{rnd.uniform(1.55, 1.95):.2f}",
        weight_kg=f"{rnd.uniform(52, 104):.1f}",
        address=f"{rnd.randint(2, 188)} {rnd.choice(_STREETS)}, {town}",
        telephone=phone,
        ethnic_group="NOT STATED",
        occupation=rnd.choice(("Stonemason", "Harbour pilot", "Glassblower", "Florist")),
        history=f"Ex-smoker, COPD follow-up; referred by {referring.split('^')[0].title()} "
        f"for {given.title()}",
        patient_comments=f"Prefers to be called {given.title()}; contact daughter on {phone}",
        accession_number=accession,
        study_id=f"S{rnd.randint(10_000, 99_999)}",
        study_description="CT THORAX 4D LUNG VENTILATION",
        study_date=study,
        study_time=f"{rnd.randint(7, 18):02d}{rnd.randint(0, 59):02d}{rnd.randint(0, 59):02d}",
        referring_physician=referring,
        performing_physician=rnd.choice(_PHYSICIANS),
        reading_physician=rnd.choice(_PHYSICIANS),
        operator=rnd.choice(_OPERATORS),
        institution=hospital,
        institution_address=f"1 Infirmary Road, {town}",
        department="Radiology Ward 7B",
        station_name=f"CTROOM{rnd.randint(1, 9)}",
        device_serial=f"SN{rnd.randint(100_000, 999_999)}",
        ae_title=f"CT{rnd.randint(10, 99)}_{town.split()[0].upper()}"[:16],
        requested_procedure_id=f"RP{rnd.randint(100_000, 999_999)}",
        scheduled_step_id=f"SPS{rnd.randint(100_000, 999_999)}",
        requested_procedure_description=f"4DCT thorax for {family.title()}",
        image_comments=f"Patient {given.title()} {family.title()} ({mrn}) coached breathing, good compliance",
        overlay_comment=f"Annotated for {family.title()} {mrn}",
        curve_description=f"Respiratory trace {family.title()}",
        private_note=f"Consent on file for {given.title()} {family.title()}, {accession}",
    )
