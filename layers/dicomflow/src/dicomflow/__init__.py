"""dicomflow: DICOM scans from an imaging device to an analysed result.

One domain package shared by the Lambda functions, the analysis container and the command line.
"""

__version__ = "0.1.0"
