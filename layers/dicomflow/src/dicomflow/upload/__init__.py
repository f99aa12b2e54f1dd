"""Device upload: the upload API's logic (presigned S3 multipart) and the resumable device uploader.

Modules the device imports (``parts``, ``device``, ``journal``, ``progress``) use the standard
library only, so the uploader installs on a Windows device; the API side (``service``,
``scans_table``, ``presign``, ``processing``) uses boto3 and is imported only where it runs.
"""
