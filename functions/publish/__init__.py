"""The publish Lambda function (a step of the scan workflow)."""
