"""Object storage behind one small interface, with S3 and local-directory implementations.

Domain code takes an :class:`ObjectStore` and never touches boto3: tests and the CLI hand it a
:class:`LocalObjectStore`, Lambda and the container an :class:`S3ObjectStore`.
"""

from dicomflow.storage.base import MIN_PART_SIZE, MultipartWriter, ObjectStore
from dicomflow.storage.local import LocalObjectStore
from dicomflow.storage.s3 import S3ObjectStore

__all__ = ["MIN_PART_SIZE", "LocalObjectStore", "MultipartWriter", "ObjectStore", "S3ObjectStore"]
