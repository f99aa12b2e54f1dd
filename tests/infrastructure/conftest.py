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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")


@dataclass
class Synth:
    stack: Any
    template: Any  # aws_cdk.assertions.Template
    json: dict[str, Any]
    outdir: Path
    context: dict[str, Any]

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


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    # Clearly marked and temporary: the workflow issue writes the ASL and the step handlers; until
    # both exist there is no stack to check (topology.FUNCTIONS names handlers that are not there).
    missing = missing_parts()
    if missing:
        pytest.skip(f"the stack is built from files not written yet: {', '.join(missing)}")

    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    outdir = tmp_path_factory.mktemp("cdk") / "cdk.out"
    context = cdk_context()
    app = cdk.App(context={**context, "aws:cdk:bundling-stacks": []}, outdir=str(outdir))
    stack = load_app().build(app)
    template = Template.from_stack(stack)
    return Synth(stack=stack, template=template, json=template.to_json(), outdir=outdir, context=context)
