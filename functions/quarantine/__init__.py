"""The quarantine Lambda function (a step of the scan workflow)."""
