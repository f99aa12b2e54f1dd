"""Settings come from DICOMFLOW_* variables, once, and a missing one is named."""

from __future__ import annotations

import pytest

from dicomflow.errors import ConfigurationError
from dicomflow.settings import Settings


def test_settings_read_typed_values_from_the_environment():
    env = {"DICOMFLOW_INGEST_BUCKET": "ingest", "DICOMFLOW_MAX_FILES": "12", "OTHER": "x"}
    settings = Settings.from_env(env)
    assert settings.ingest_bucket == "ingest"
    assert settings.max_files == 12
    assert settings.manifest_limits.max_files == 12
    assert settings.results_bucket is None


def test_a_bad_number_names_the_variable():
    with pytest.raises(ConfigurationError, match="DICOMFLOW_MAX_FILES must be a whole number"):
        Settings.from_env({"DICOMFLOW_MAX_FILES": "many"})


def test_a_missing_required_setting_names_the_variable():
    with pytest.raises(ConfigurationError, match="set the environment variable DICOMFLOW_SCANS_TABLE"):
        Settings.from_env({}).require("scans_table")
