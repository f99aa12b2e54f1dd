"""The domain package as a Lambda layer, bundled on this machine with pip: no Docker.

pip installs the layer's pinned requirements (``cdk/layer-requirements.txt``) as the Lambda platform's
wheels (Linux arm64, CPython 3.12) into ``<output>/python``, and the package's own source is copied
beside them (it is pure Python, so it needs no build). Only binary wheels are accepted: a source
build here would compile for this machine, not for Lambda. Both manylinux tags are offered because
with only the 2014 one pip silently settles for an old numpy.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parent.parent
LAYER_SOURCE = ROOT / "layers" / "dicomflow"
LAYER_REQUIREMENTS = Path(__file__).resolve().parent / "layer-requirements.txt"
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
#: Never part of the layer (nor of its asset hash): caches and build leftovers.
EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/*.egg-info", "build", "dist"]


def pip_command(target: Path) -> list[str]:
    """The pip invocation that installs the layer's requirements for the Lambda platform."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile",  # bytecode for this interpreter would be dead weight on Lambda's
        "--target", str(target), *platforms, "--only-binary=:all:",
        "--python-version", PYTHON_VERSION, "--implementation", "cp",
        "-r", str(LAYER_REQUIREMENTS),
    ]  # fmt: skip


@jsii.implements(ILocalBundling)
class PipLayerBundling:
    """Local bundling of the layer; raises (rather than falling back to Docker) if pip fails."""

    def try_bundle(self, output_dir: str, _options: Any = None) -> bool:
        target = Path(output_dir) / "python"
        done = subprocess.run(pip_command(target), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"layer bundling: pip failed ({done.returncode}):\n{done.stderr[-4000:]}")
        shutil.copytree(
            LAYER_SOURCE / "src" / "dicomflow",
            target / "dicomflow",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        return True


def layer_code() -> lambda_.Code:
    """The layer's code asset. Its hash is the source's and the requirements', so a synth with
    nothing changed reuses the bundle already in cdk.out instead of running pip again."""
    return lambda_.Code.from_asset(
        str(LAYER_SOURCE),
        exclude=EXCLUDE,
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=_source_hash(),
        bundling=BundlingOptions(
            # Used only if local bundling declined, which PipLayerBundling never does.
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{PYTHON_VERSION}"),
            # jsii calls try_bundle(output_dir, options) positionally, not with the typed keywords.
            local=cast(ILocalBundling, PipLayerBundling()),
        ),
    )


def _source_hash() -> str:
    digest = hashlib.sha256()
    digest.update(LAYER_REQUIREMENTS.read_bytes())
    digest.update(" ".join((*PLATFORMS, PYTHON_VERSION)).encode())
    digest.update((LAYER_SOURCE / "pyproject.toml").read_bytes())
    for path in sorted((LAYER_SOURCE / "src" / "dicomflow").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(LAYER_SOURCE).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
