"""What the commands may write where: nothing lost, nothing mixed.

Every command that writes checks its outputs before it starts work (a run of 1500 files must not
end on "the report path is a folder"), and then:

- never writes into, over or around its input (``deid SRC SRC`` would overwrite the originals;
  :func:`refuse_overlap`, symlinks resolved);
- never writes over an existing file, nor into a folder already holding another run's files
  (one folder is one scan), unless the user passed ``--force`` (:func:`check_new_file`,
  :func:`check_output_dir`, then :func:`make_output_dir`, which clears it);
- replaces a report in one step (:func:`write_text_atomic`), so a crash leaves the old one or the
  new one, never half of it.

The messages name the user's own paths, as given on the command line: they go to the user's
terminal, never to a log.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from dicomflow.errors import InvalidInputError

FORCE_HINT = "pass --force to replace it"


def resolved(path: str | os.PathLike[str]) -> Path:
    """The absolute path with every symlink that exists resolved (the rest kept as written)."""
    return Path(path).expanduser().resolve()


def is_within(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, symlinks resolved.

    Examples
    --------
    >>> is_within("/scan/out", "/scan"), is_within("/scan", "/scan"), is_within("/scans", "/scan")
    (True, True, False)
    """
    inner, outer = resolved(path), resolved(folder)
    return inner == outer or outer in inner.parents


def refuse_overlap(
    src: str | os.PathLike[str], dest: str | os.PathLike[str], src_name: str = "SRC", dest_name: str = "DEST"
) -> None:
    """Raise unless ``dest`` and ``src`` are apart: neither the same, nor one inside the other."""
    s, d = resolved(src), resolved(dest)
    if s == d:
        raise InvalidInputError(f"{dest_name} {dest} is {src_name} itself: give a new folder for the output")
    if s in d.parents:
        raise InvalidInputError(f"{dest_name} {dest} is inside {src_name} {src}: give a folder outside it")
    if d in s.parents:
        raise InvalidInputError(f"{dest_name} {dest} contains {src_name} {src}: give a folder outside it")


def check_new_file(path: str | os.PathLike[str], *, force: bool, flag: str) -> None:
    """Raise unless a file can be written at ``path``: not a folder, and (without ``force``) not
    an existing file; its parent, if it exists, a folder."""
    p = Path(path)
    if p.is_dir():
        raise InvalidInputError(f"{flag} {path} is a folder: give a file name")
    if (p.exists() or p.is_symlink()) and not force:
        raise InvalidInputError(f"{flag} {path} already exists: {FORCE_HINT}, or give another name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InvalidInputError(f"{flag} {path}: {parent} is a file, not a folder")
            break


def check_output_dir(path: str | os.PathLike[str], *, force: bool, flag: str) -> None:
    """Raise unless ``path`` can be this run's own folder: absent or empty, or (with ``force``)
    a folder that may be cleared."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InvalidInputError(f"{flag} {path} is a file, not a folder")
    if not p.exists():
        check_new_file(p, force=False, flag=flag)  # its parent, if any, must be a folder
        return
    try:
        entries = sum(1 for _ in p.iterdir())
    except OSError as exc:
        raise InvalidInputError(f"cannot list {flag} {path}: {exc.strerror}") from None
    if not entries:
        return
    if not force:
        raise InvalidInputError(
            f"{flag} {path} is not empty ({entries} entries): give a new or empty folder, or pass "
            "--force to clear it first"
        )
    if resolved(p) in {Path(p.anchor).resolve(), Path.home().resolve(), Path.cwd().resolve()}:
        raise InvalidInputError(f"{flag} {path} is not a folder --force may clear: give a folder of its own")


def make_output_dir(path: str | os.PathLike[str], *, flag: str) -> None:
    """Create ``path``, or empty it (after :func:`check_output_dir` said it may be)."""
    p = Path(path)
    try:
        if p.is_dir():
            import shutil  # 2-3 ms: only when there is something to clear

            for entry in p.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot prepare {flag} {path}: {exc.strerror}") from None


def write_text_atomic(path: str | os.PathLike[str], text: str, *, flag: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed over it (flushed to disk
    first), creating the parent folder if needed."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise InvalidInputError(f"cannot write {flag} {path}: {exc.strerror}") from None
