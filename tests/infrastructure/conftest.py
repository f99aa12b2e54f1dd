"""One synth of the app per test session, shared by every infrastructure test.

The app is built exactly as ``cdk synth`` builds it (app.py's ``build``, cdk.json's context and
feature flags, cdk-nag's packs), except that asset bundling is skipped: the layer's pip run belongs
to ``make synth``. An unacknowledged cdk-nag finding makes the synth itself fail, so every test here
fails on a new finding.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _quiet_jsii() -> None:
    """jsii warns in capitals on every start that this machine's node is past its end of life;
    it is silenced by naming that node's major version."""
    node = shutil.which("node")
    if node is None:
        return
    version = subprocess.run([node, "-p", "process.versions.node"], capture_output=True, text=True).stdout
    major = version.strip().split(".")[0]
    for warning in ("END_OF_LIFE", "DEPRECATED"):
        os.environ.setdefault(f"JSII_SILENCE_WARNING_{warning}_NODE_VERSION", major)


_quiet_jsii()


@dataclass
class Synth:
    stack: Any
    template: Any  # aws_cdk.assertions.Template
    json: dict[str, Any]
    outdir: Path
    context: dict[str, Any]
    #: The files that tests/infrastructure/standin stood in for (empty once the real ones exist).
    standins: list[str]

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == kind}

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{self.stack.stack_name}.template.json"


def load_app() -> ModuleType:
    """app.py as a module (it sits at the repository root, outside any package)."""
    spec = importlib.util.spec_from_file_location("dicomflow_cdk_app", ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cdk_context() -> dict[str, Any]:
    return dict(json.loads((ROOT / "cdk.json").read_text())["context"])


def missing_parts() -> list[str]:
    """What the stack is built from that other work has not written yet."""
    from dicomflow import topology

    missing = []
    try:
        topology.asl_text()
    except FileNotFoundError:
        missing.append("layers/dicomflow/src/dicomflow/statemachine/scan.asl.json")
    for spec in topology.FUNCTIONS.values():
        if not (ROOT / spec.code_dir / "handler.py").is_file():
            missing.append(f"{spec.code_dir}/handler.py")
    return missing


STANDIN = Path(__file__).with_name("standin")


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    outdir = tmp_path_factory.mktemp("cdk") / "cdk.out"
    context = cdk_context()
    with pytest.MonkeyPatch.context() as patch:
        standins = _use_standins(patch, tmp_path_factory.mktemp("standin"))
        app = cdk.App(context={**context, "aws:cdk:bundling-stacks": []}, outdir=str(outdir))
        stack = load_app().build(app)
        template = Template.from_stack(stack)
    return Synth(stack, template, template.to_json(), outdir, context, standins)


def _use_standins(patch: pytest.MonkeyPatch, root: Path) -> list[str]:
    """STAND-INS, tests only, until the workflow issue lands its files: the ASL and the step handlers
    that topology.FUNCTIONS names but nobody has written yet. Storage, API, functions, network and
    compliance are checked all the same; the tests about the ASL itself skip (``synth.standins``)."""
    from cdk.constructs import functions
    from dicomflow import topology

    missing = missing_parts()
    if not missing:
        return []
    try:
        topology.asl_text()
    except FileNotFoundError:
        patch.setattr(topology, "asl_text", lambda: (STANDIN / "scan.asl.json").read_text("utf-8"))
    for spec in topology.FUNCTIONS.values():
        real = ROOT / spec.code_dir
        (root / spec.code_dir).parent.mkdir(parents=True, exist_ok=True)
        if (real / "handler.py").is_file():
            (root / spec.code_dir).symlink_to(real)
        else:
            (root / spec.code_dir).mkdir()
            (root / spec.code_dir / "handler.py").write_text(
                "# STAND-IN for tests/infrastructure only: the workflow issue writes the real handler.\n"
                "def lambda_handler(event, context):\n    raise NotImplementedError\n"
            )
    patch.setattr(functions, "ROOT", root)
    return missing
