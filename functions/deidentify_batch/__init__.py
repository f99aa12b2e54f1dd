"""The deidentify_batch Lambda function (a step of the scan workflow)."""
