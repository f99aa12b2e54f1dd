"""Compliance of the synthesized template: cdk-nag, cfn-lint and checkov, all offline.

cdk-nag's AwsSolutions and HIPAA Security packs run inside the session synth (an unacknowledged
finding fails it); here every acknowledgment is checked to carry a specific reason and to be listed
in the README's Security section. cfn-lint must report no error (and no warning but CDK's redundant
DependsOn, W3005); checkov must report no failure, and every check it skips must be justified in the
resource's metadata and listed in the README.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKOV_VENV = ROOT / ".venv" / "tools" / "checkov"
CHECKOV_REQUIREMENTS = Path(__file__).with_name("checkov-requirements.txt")
#: CDK writes a DependsOn on a role's default policy even where a GetAtt already orders them.
CFN_LINT_ACCEPTED = {"W3005"}
#: Acknowledgments aws-cdk-lib itself records (not ours to justify).
CDK_OWN = ("CloudFormation-Validate::",)


def _security_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Security\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, "README.md has no '## Security' section"
    return match.group(1)


def _acknowledgments(synth) -> dict[str, set[str]]:
    """Rule id -> the reasons given for it, from the cloud assembly's metadata."""
    metadata = json.loads((synth.outdir / f"{synth.stack.stack_name}.metadata.json").read_text())
    found: dict[str, set[str]] = defaultdict(set)
    for entries in metadata.values():
        for entry in entries:
            if entry["type"] == "aws:cdk:acknowledged-rules":
                for rule, reason in entry["data"].items():
                    if not rule.startswith(CDK_OWN):
                        found[rule.split("::", 1)[-1]].add(reason)
    return found


def test_cdk_nag_packs_ran_and_every_acknowledgment_is_specific(synth):
    acknowledged = _acknowledgments(synth)
    assert any(r.startswith("AwsSolutions-") for r in acknowledged)
    assert any(r.startswith("HIPAA.Security-") for r in acknowledged)
    for rule, reasons in acknowledged.items():
        for reason in reasons:
            assert len(reason) >= 60, f"{rule}: a reason must say why here, not just 'ok': {reason!r}"
            assert not re.search(r"\b(todo|tbd|fixme|not needed|n/a)\b", reason, re.I), (rule, reason)


def test_readme_security_section_lists_every_acknowledged_rule(synth):
    section = _security_section()
    rules = {r.split("[", 1)[0] for r in _acknowledgments(synth)}
    missing = sorted(r for r in rules if r not in section)
    assert not missing, f"README Security section does not mention: {missing}"


def test_cfn_lint_reports_no_errors(synth):
    done = subprocess.run(
        [sys.executable, "-m", "cfnlint", "--format", "json", str(synth.template_path)],
        capture_output=True,
        text=True,
    )
    findings = json.loads(done.stdout or "[]")
    unexpected = [f for f in findings if f["Rule"]["Id"] not in CFN_LINT_ACCEPTED]
    assert not unexpected, json.dumps(unexpected, indent=1)[:4000]


def _checkov() -> Path:
    """checkov from its own virtualenv, made on first use (one process at a time)."""
    executable = CHECKOV_VENV / "bin" / "checkov"
    CHECKOV_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(CHECKOV_VENV.parent / ".checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = CHECKOV_VENV / ".requirements"
        if (
            not executable.exists()
            or not stamp.exists()
            or stamp.read_text() != CHECKOV_REQUIREMENTS.read_text()
        ):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(CHECKOV_VENV)], check=True)
            subprocess.run(
                [str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 "--disable-pip-version-check", "-r", str(CHECKOV_REQUIREMENTS)],
                check=True,
            )  # fmt: skip
            stamp.write_text(CHECKOV_REQUIREMENTS.read_text())
    return executable


@pytest.fixture(scope="module")
def checkov_report(synth) -> dict:
    done = subprocess.run(
        [str(_checkov()), "--skip-download", "--framework", "cloudformation", "--output", "json",
         "--file", str(synth.template_path)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr[-4000:]
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_has_no_failed_check(checkov_report):
    failed = [
        (c["check_id"], c["resource"], c["check_name"]) for c in checkov_report["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert checkov_report["summary"]["passed"] > 100  # it did scan the template


def test_checkov_skips_are_justified_used_and_listed(synth, checkov_report):
    recorded = {}
    for logical_id, resource in synth.json["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip["comment"]) >= 40, (logical_id, skip)
            recorded[(skip["id"], logical_id)] = skip["comment"]
    skipped = {
        (c["check_id"], c["resource"].split(".", 1)[1]) for c in checkov_report["results"]["skipped_checks"]
    }
    assert skipped == set(recorded), "a skip in metadata that checkov did not need, or the reverse"
    section = _security_section()
    missing = sorted({check for check, _ in recorded if check not in section})
    assert not missing, f"README Security section does not list: {missing}"
