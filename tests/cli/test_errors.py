"""Errors a user can act on: one line naming the file or flag, and what went wrong."""

from __future__ import annotations

import argparse

import pytest

from dicomflow import cli
from dicomflow.cli import main
from tests.cli.conftest import Places


def test_deid_names_each_file_that_did_not_pass_with_its_reason(
    places: Places, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a folder (no manifest) with a DICOM slice, a non-DICOM file and a burned-in slice
    src = places.tmp / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "ct.dcm").write_bytes((places.scan / "phase_00" / "slice_0000.dcm").read_bytes())
    (src / "sub" / "notes.txt").write_text("not DICOM")
    import pydicom

    burned = pydicom.dcmread(places.scan / "phase_00" / "slice_0001.dcm")
    burned.BurnedInAnnotation = "YES"
    burned.save_as(src / "burned.dcm")
    # When it is de-identified without --report
    code = main(["deid", str(src), str(places.tmp / "out"), "--key-file", str(places.key), "--workers", "1"])
    # Then stderr names each file that did not pass, by its path inside SRC, with the reason
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert [line.split(": ")[1:3] for line in err] == [["held", "burned.dcm"], ["rejected", "sub/notes.txt"]]
    assert "BurnedInAnnotation is YES" in err[0] and "Error" in err[1]
    assert str(places.tmp) not in "".join(err)  # paths inside SRC, not the whole path


def _failing_command(exc: BaseException) -> list[str]:
    def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = subparsers.add_parser("boom")

        def fail(args: argparse.Namespace) -> int:
            raise exc

        parser.set_defaults(func=fail)

    return register  # type: ignore[return-value]


@pytest.fixture()
def boom(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A command ``boom`` that raises the exception given."""

    def install(exc: BaseException) -> None:
        module = type("module", (), {"register": staticmethod(_failing_command(exc))})
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "boom"))
        real = cli.importlib.import_module
        monkeypatch.setattr(
            cli.importlib,
            "import_module",
            lambda name: module if name == "dicomflow.cli.boom" else real(name),
        )

    monkeypatch.delenv("DICOMFLOW_DEBUG", raising=False)
    return install


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            PermissionError(13, "Permission denied", "/data/out/seg.dcm"),
            "could not access /data/out/seg.dcm: Permission denied",
        ),
        (IsADirectoryError(21, "Is a directory", "/data/report"), "/data/report: Is a directory"),
        (OSError(28, "No space left on device"), "No space left on device"),
    ],
    ids=["permission", "directory", "disk-full"],
)
def test_an_unexpected_os_error_is_one_line_with_the_file_and_reason(
    boom, exc: OSError, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boom(exc)
    assert main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_a_bug_is_one_line_without_its_message_and_a_traceback_only_when_debugging(
    boom, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    boom(KeyError("Doe^Jane"))  # a message that might quote a value read from a file
    assert main(["boom"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error KeyError" in err and "DICOMFLOW_DEBUG=1" in err
    assert "Doe^Jane" not in err
    monkeypatch.setenv("DICOMFLOW_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["boom"])
