"""Fixtures shared by the functional tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dicomflow.local.moto_server import start_local_aws


class SharedLocalAws:
    """A module's embedded moto server, handed to several upload stacks: a stack's ``stop`` must
    not stop it (the fixture does, once, at the end of the module)."""

    def __init__(self, local: Any) -> None:
        self._local = local

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    def stop(self) -> None:
        pass


@pytest.fixture(scope="module")
def local_aws() -> Iterator[SharedLocalAws]:
    local = start_local_aws()
    yield SharedLocalAws(local)
    local.stop()
