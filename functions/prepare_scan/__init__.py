"""The prepare_scan Lambda function (a step of the scan workflow)."""
