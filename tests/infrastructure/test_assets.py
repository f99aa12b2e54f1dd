"""The code the stack ships: the layer's pins, its pip invocation, the analysis image's context.

Given the session synth (bundling skipped: `make synth` runs pip), when we read the cloud assembly's
assets, then the image's staged context holds exactly what the Dockerfile copies, and the layer would
be built from the repository's own pins for Lambda's platform.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cdk import bundling

ROOT = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def test_layer_pins_agree_with_the_repository_pins():
    layer = _pins(bundling.LAYER_REQUIREMENTS)
    repository = _pins(ROOT / "requirements.txt") | _pins(ROOT / "requirements-dev.txt")
    shared = set(layer) & set(repository)
    assert {"pydicom", "numpy", "blake3", "aws-lambda-powertools", "boto3"} <= shared
    assert {n: layer[n] for n in shared} == {n: repository[n] for n in shared}


def test_layer_is_installed_for_lambda_arm64_cp312_binary_only(tmp_path):
    command = bundling.pip_command(tmp_path / "python")
    assert command[command.index("--target") + 1] == str(tmp_path / "python")
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms == ["manylinux_2_28_aarch64", "manylinux2014_aarch64"]
    assert "--only-binary=:all:" in command and "--no-compile" in command
    assert command[command.index("--python-version") + 1] == "3.12"


def test_analysis_image_context_is_what_the_dockerfile_copies(synth):
    assets = json.loads((synth.outdir / f"{synth.stack.stack_name}.assets.json").read_text())
    (image,) = assets["dockerImages"].values()
    source = image["source"]
    assert source["dockerFile"] == "ml_container/Dockerfile" and source["platform"] == "linux/arm64"
    context = synth.outdir / source["directory"]
    staged = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    dockerfile = (ROOT / "ml_container" / "Dockerfile").read_text()
    copied = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copied
    for path in copied:
        assert any(s == path or s.startswith(path.rstrip("/") + "/") for s in staged), path
    assert "ml_container/Dockerfile" in staged
    assert not any(s.startswith((".venv/", "cdk.out/", "tests/", "node_modules/")) for s in staged)
    assert not any("__pycache__" in s for s in staged)
