"""The state machine in the template is the ASL the local stack runs, and its error names exist.

Given the shared ASL (``topology.asl_text()``), when the CDK app synthesizes the state machine, then
its DefinitionString is that text verbatim and CloudFormation fills exactly the ASL's substitutions,
so substituting any values gives what ``topology.render_asl`` (the local stack's renderer) gives.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dicomflow import topology
from dicomflow.errors import ERROR_CLASSES

ROOT = Path(__file__).resolve().parents[2]


def _machine(synth) -> dict[str, Any]:
    """The state machine's properties, whichever ASL (the real one or the stand-in) was synthesized."""
    (machine,) = synth.resources("AWS::StepFunctions::StateMachine").values()
    return machine["Properties"]


def _state_machine(synth) -> dict[str, Any]:
    if any(p.endswith("scan.asl.json") for p in synth.standins):
        pytest.skip(
            "the ASL (dicomflow/statemachine/scan.asl.json) is not written yet: a stand-in was synthesized"
        )
    (machine,) = synth.resources("AWS::StepFunctions::StateMachine").values()
    return machine["Properties"]


def _states(definition: dict[str, Any]):
    for name, state in definition.get("States", {}).items():
        yield name, state
        for nested in (state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])):
            if nested:
                yield from _states(nested)


def _placeholders() -> dict[str, str]:
    """A plausible value for every substitution (ARN-shaped where the ASL expects an ARN)."""
    values = {}
    for name in topology.asl_substitution_names():
        function = name.removeprefix("FunctionArn_")
        if function != name:
            values[name] = f"arn:aws:lambda:eu-west-1:123456789012:function:dicomflow-{function}"
        elif "cluster" in name.lower():
            values[name] = "arn:aws:ecs:eu-west-1:123456789012:cluster/dicomflow"
        elif "taskdef" in name.lower():
            values[name] = "arn:aws:ecs:eu-west-1:123456789012:task-definition/dicomflow-analysis:1"
        else:
            values[name] = f"placeholder-{name.lower()}"
    return values


def test_definition_is_the_shared_asl_verbatim(synth):
    props = _state_machine(synth)
    assert props["DefinitionString"] == topology.asl_text()
    assert set(props.get("DefinitionSubstitutions", {})) == topology.asl_substitution_names()


def test_synthesized_definition_renders_as_the_local_stack_renders(synth):
    """CloudFormation's substitution of the template and render_asl agree on the same values."""
    props = _state_machine(synth)
    values = _placeholders()
    cloudformation = re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: values[m.group(1)], props["DefinitionString"])
    assert json.loads(cloudformation) == json.loads(topology.render_asl(values))


def test_function_substitutions_are_the_functions_arns(synth):
    props = _machine(synth)
    functions = synth.resources("AWS::Lambda::Function")
    for name, value in props.get("DefinitionSubstitutions", {}).items():
        function = name.removeprefix("FunctionArn_")
        if function == name:
            continue
        assert function in topology.WORKFLOW_FUNCTIONS, name
        logical_id, attribute = value["Fn::GetAtt"]
        construct = "".join(p.capitalize() for p in function.split("_"))
        assert attribute == "Arn" and logical_id.startswith(f"Functions{construct}"), name
        assert logical_id in functions


def test_state_machine_invokes_only_the_functions_it_names(synth):
    policies = synth.resources("AWS::IAM::Policy")
    (policy,) = [p for k, p in policies.items() if k.startswith("WorkflowStateMachineRole")]
    invoked = set()
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        if "lambda:InvokeFunction" in statement["Action"]:
            for resource in statement["Resource"]:
                text = json.dumps(resource)
                invoked |= {k for k in synth.resources("AWS::Lambda::Function") if k in text}
    named = {
        k
        for name in _machine(synth)["DefinitionSubstitutions"]
        if name.startswith("FunctionArn_")
        for k in synth.resources("AWS::Lambda::Function")
        if k.startswith(
            "Functions" + "".join(p.capitalize() for p in name.removeprefix("FunctionArn_").split("_"))
        )
    }
    assert invoked == named and named


def test_logging_all_to_an_encrypted_group_and_tracing(synth):
    props = _machine(synth)
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["TracingConfiguration"] == {"Enabled": True}
    (destination,) = props["LoggingConfiguration"]["Destinations"]
    group = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
    assert "KmsKeyId" in synth.json["Resources"][group]["Properties"]


@pytest.fixture
def asl() -> str:
    try:
        return topology.asl_text()
    except FileNotFoundError:
        pytest.skip("the ASL (dicomflow/statemachine/scan.asl.json) is not written yet")


def test_every_error_name_in_the_asl_exists(asl):
    """Retry and Catch match on exception class names: each must be a dicomflow error or AWS's own."""
    definition = json.loads(topology.render_asl(_placeholders()))
    names = set()
    for _, state in _states(definition):
        for clause in (*state.get("Retry", []), *state.get("Catch", [])):
            names.update(clause["ErrorEquals"])
    assert names, "the ASL retries or catches nothing"
    aws_own = ("States.", "Lambda.", "ECS.")  # Step Functions' and its integrations' error names
    unknown = {n for n in names if n not in ERROR_CLASSES and not n.startswith(aws_own)}
    assert not unknown, (
        f"error names the ASL matches that dicomflow.errors does not define: {sorted(unknown)}"
    )


def test_asl_is_valid_for_asl_validator(asl, tmp_path):
    """npm asl-validator catches dangling and unreachable states that cfn-lint does not."""
    validator = ROOT / "node_modules" / ".bin" / "asl-validator"
    if not validator.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: asl-validator (package.json) cannot run here")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    rendered = tmp_path / "scan.asl.json"
    rendered.write_text(topology.render_asl(_placeholders()))
    done = subprocess.run([str(validator), "--json-path", str(rendered)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
