"""The validate_scan Lambda function (a step of the scan workflow)."""
