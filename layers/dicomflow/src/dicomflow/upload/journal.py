"""The resume journal, kept next to the scan: what a restarted ``dicomflow upload`` needs.

Two files in the scan folder (hidden, so they never become part of the scan):

- ``.dicomflow-upload.json``: the state (API, scan id, manifest, part sizes and part hashes, files
  complete, done), replaced atomically (written to a temporary file, flushed to disk, renamed over).
- ``.dicomflow-upload.parts``: one JSON line per part the storage acknowledged, appended and flushed
  as it happens, so a kill loses at most the parts in flight. A torn last line is ignored.

The journal is a cache of the server's state, never the truth: on resume the server says which
files are complete and which parts S3 holds; the journal says which scan to resume and spares
re-hashing. When the server does not know the scan, :meth:`Journal.forget_scan` keeps the hashes and
drops the scan. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

STATE_NAME = ".dicomflow-upload.json"
PARTS_NAME = ".dicomflow-upload.parts"
VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new content, never half."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Journal:
    """The journal of one scan folder.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> j = Journal(folder)
    >>> j.state["scan_id"] = "s1"; j.save(); j.record_part(0, 1, '"etag"')
    >>> again = Journal.load(folder)
    >>> again.state["scan_id"], sorted(again.parts)
    ('s1', [(0, 1)])
    """

    def __init__(
        self,
        folder: Path,
        state: dict[str, Any] | None = None,
        parts: dict[tuple[int, int], str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.state: dict[str, Any] = state if state is not None else {"version": VERSION}
        self.parts: dict[tuple[int, int], str] = parts or {}
        self.part_sha256: dict[tuple[int, int], str] = {}
        self._lock = threading.Lock()

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_NAME

    @property
    def parts_path(self) -> Path:
        return self.folder / PARTS_NAME

    @classmethod
    def load(cls, folder: Path) -> Journal:
        """The folder's journal, or an empty one when there is none (or it is unreadable)."""
        folder = Path(folder)
        try:
            state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(folder)
        if not isinstance(state, dict) or state.get("version") != VERSION:
            return cls(folder)
        parts: dict[tuple[int, int], str] = {}
        hashes: dict[tuple[int, int], str] = {}
        try:
            with open(folder / PARTS_NAME, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        if entry.get("scan_id") == state.get("scan_id"):
                            parts[(int(entry["f"]), int(entry["p"]))] = str(entry["e"])
                            if entry.get("s"):
                                hashes[(int(entry["f"]), int(entry["p"]))] = str(entry["s"])
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # a line torn by a crash
        except OSError:
            pass
        journal = cls(folder, state, parts)
        journal.part_sha256 = hashes
        return journal

    def save(self) -> None:
        with self._lock:
            atomic_write_text(self.state_path, json.dumps(self.state, separators=(",", ":")))

    def record_part(self, file_index: int, part_number: int, etag: str, sha256: str = "") -> None:
        """Append one acknowledged part and its SHA-256 (flushed and synced before returning)."""
        entry = {
            "scan_id": self.state.get("scan_id"),
            "f": file_index,
            "p": part_number,
            "e": etag,
            "s": sha256,
        }
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            self.parts[(file_index, part_number)] = etag
            if sha256:
                self.part_sha256[(file_index, part_number)] = sha256
            with open(self.parts_path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())

    def forget_scan(self) -> None:
        """Drop the scan (its id, the files complete, the parts acknowledged) and keep the files'
        hashes: the next upload is a new scan of the same files, without reading them again."""
        with self._lock:
            for key in ("scan_id", "complete", "done", "status", "bytes_total"):
                self.state.pop(key, None)
            self.parts = {}
            self.part_sha256 = {}
            with contextlib.suppress(FileNotFoundError):
                self.parts_path.unlink()

    def reset(self) -> None:
        """Forget everything (a new scan starts from this folder)."""
        with self._lock:
            self.state = {"version": VERSION}
            self.parts = {}
            for path in (self.state_path, self.parts_path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
