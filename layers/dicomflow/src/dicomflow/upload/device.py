"""The device uploader: a scan folder into the cloud through the upload API's presigned URLs.

Standard library only (``http.client``, ``concurrent.futures``, ``hashlib``, ``json``), so it installs
on a Windows device; it imports :mod:`dicomflow.manifest` and :mod:`dicomflow.upload.parts`, which
are standard-library only too. The device holds no credentials for the data, only short-lived URLs;
with AWS credentials in its environment it signs its API calls with SigV4 (the API's IAM auth).

What it does, in order:

1. Builds the manifest (size and SHA-256 of every file) and, in the same read, the SHA-256 of every
   part (part size from :func:`~dicomflow.upload.parts.choose_part_size`), so nothing is hashed
   twice; keeps both in the journal next to the scan.
2. ``POST /scans`` (first time) or, when the journal names a scan, asks the API in one call
   (``GET /scans/{id}?files_from=0&urls=1``, a page per 2000 files) the state of every file and
   the parts S3 already holds: a restart after a crash, a kill or a reboot re-sends only what did
   not land. The journal is a cache, never the truth: a scan is "already uploaded" only when the
   server says so; a journal for another API, or a scan the server does not know (404), starts a
   new scan.
3. PUTs parts in parallel (``workers`` threads, one kept-alive connection each), each with its
   signed SHA-256; retries 5xx, throttling and network errors with exponential backoff and jitter;
   refreshes expired URLs (403); completes each file, then the scan.

Every request has a timeout. Every failure ends in :class:`~dicomflow.errors.UploadError` whose
message says what happened and what to do, naming a file by its path in the scan folder (the API
names files by position only; the device, which has the names, shows them on its own terminal); an
interrupt ends in :class:`UploadInterrupted` after the journal is saved.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from dicomflow.errors import DicomflowError, UploadError
from dicomflow.manifest import (
    DeviceSettings,
    ManifestFile,
    ScanManifest,
    ScanType,
    check_relative_name,
    is_scan_file,
)
from dicomflow.upload.journal import Journal
from dicomflow.upload.parts import MiB, choose_part_size, is_single_put, part_count, part_range
from dicomflow.upload.progress import Progress

DEFAULT_WORKERS = 4
MAX_WORKERS = 64  # more threads than that only queue at the storage (and a typo should not fork 4000)
#: Seconds any request may stay silent (connecting, sending, waiting for the answer); API Gateway
#: itself gives up after 29 s.
DEFAULT_TIMEOUT_S = 60.0
#: Attempts for a request before the API has answered once in this run: a URL that nothing answers
#: is more likely wrong than a network blip, so say so in seconds, not after minutes of backoff.
FIRST_CONTACT_ATTEMPTS = 3
#: Workers by default when most of the scan's files are single PUTs (a 4D-CT scan's 1500 slices):
#: a small file's time is round trips, not bytes, so more of them overlap (s3transfer's concurrency;
#: 1500 x 0.5 MB on the local stack: 4 workers 48 s, 8 33 s, 10-16 about 31 s).
DEFAULT_WORKERS_SMALL_FILES = 10
DEFAULT_PART_SIZE = 8 * MiB  # what S3 tools default to; small parts also make moto complete faster
TOKEN_HEADER = "X-Dicomflow-Token"
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
_HASH_CHUNK = 8 * MiB
#: Single-PUT files completed per request (the API's limit): each request costs the API a batch
#: read of their records and a listing, so fewer, larger batches cost less.
_COMPLETE_BATCH = 100


class UploadInterrupted(UploadError):
    """The upload was stopped (Ctrl-C); the journal is saved and the same command resumes it."""


class ApiError(UploadError):
    """The upload API refused a request; ``code`` and the message are the API's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsCredentials | None:
        env = os.environ if environ is None else environ
        if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            return cls(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"))
        return None


def sigv4_headers(
    method: str,
    url: str,
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    *,
    service: str = "execute-api",
    now: float | None = None,
) -> dict[str, str]:
    """Headers that sign a request with AWS Signature Version 4 (what API Gateway's IAM auth checks).

    Examples
    --------
    >>> h = sigv4_headers("GET", "https://abc.execute-api.eu-west-1.amazonaws.com/prod/scans/x", b"",
    ...                   AwsCredentials("AKID", "secret"), "eu-west-1", now=0)
    >>> h["Authorization"].split(",")[0]
    'AWS4-HMAC-SHA256 Credential=AKID/19700101/eu-west-1/execute-api/aws4_request'
    """
    split = urlsplit(url)
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    datestamp = amz_date[:8]
    headers = {"host": split.netloc, "x-amz-date": amz_date}
    if credentials.session_token:
        headers["x-amz-security-token"] = credentials.session_token
    signed = ";".join(sorted(headers))
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(p.split("=", 1) if "=" in p else (p, "") for p in split.query.split("&") if p)
    )
    canonical = "\n".join(
        [
            method,
            quote(split.path or "/", safe="/~"),
            query,
            "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers)),
            signed,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + credentials.secret_key).encode()
    for part in (datestamp, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {
        "X-Amz-Date": amz_date,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}",
    }
    if credentials.session_token:
        out["X-Amz-Security-Token"] = credentials.session_token
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to ``min(cap, base * 2**n)``."""

    attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 20.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.cap_s, self.base_s * 2**attempt)


class _Connections:
    """One kept-alive HTTP(S) connection per thread and host."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._local = threading.local()

    def get(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.timeout)
            pool[(scheme, netloc)] = conn
        return conn

    def drop(self, scheme: str, netloc: str) -> None:
        pool = self._local.__dict__.get("pool", {})
        conn = pool.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[start, end)`` of a file, sent with ``sendfile`` (no copy through Python's memory)."""

    path: Path
    start: int
    end: int


class ShortFileError(OSError):
    """The file ended before the range did: it was truncated meanwhile."""


def _send_file_range(conn: http.client.HTTPConnection, body: FileRange) -> None:
    count = body.end - body.start
    with open(body.path, "rb") as fh:
        sent = conn.sock.sendfile(fh, offset=body.start, count=count)
    if sent != count:
        raise ShortFileError(f"sent {sent} of {count} bytes")


def _request(
    conns: _Connections, method: str, url: str, body: bytes | FileRange | None, headers: Mapping[str, str]
) -> tuple[int, dict[str, str], bytes]:
    split = urlsplit(url)
    target = split.path + (f"?{split.query}" if split.query else "")
    for fresh in (False, True):
        conn = conns.get(split.scheme, split.netloc)
        try:
            if isinstance(body, FileRange):
                conn.putrequest(method, target, skip_accept_encoding=True)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders()
                _send_file_range(conn, body)
            else:
                conn.request(method, target, body=body, headers=dict(headers))
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            conns.drop(split.scheme, split.netloc)
            if fresh:
                raise
            # A kept-alive connection the server closed meanwhile: try once on a new one.
        except BaseException:
            conns.drop(split.scheme, split.netloc)
            raise
    raise AssertionError("unreachable")


class ApiClient:
    """JSON calls to the upload API, retried on 5xx, throttling and network errors."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        credentials: AwsCredentials | None = None,
        region: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = check_api_url(base_url)
        self.token = token
        self.credentials = credentials
        self.region = region or _region_of(self.base_url)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._conns = _Connections(timeout)
        self._answered = False  # has the API answered once (any status) in this run?

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else b""
        last: Exception | None = None
        for attempt in range(self.retry.attempts):
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if self.token:
                headers[TOKEN_HEADER] = self.token
            if self.credentials and self.region:
                headers.update(sigv4_headers(method, url, data, self.credentials, self.region))
            try:
                status, _, payload = _request(
                    self._conns, method, url, data if method != "GET" else None, headers
                )
            except OSError as exc:
                last = exc
                if not self._answered and attempt + 1 >= FIRST_CONTACT_ATTEMPTS:
                    break
                time.sleep(self.retry.delay(attempt))
                continue
            self._answered = True
            if status in _RETRYABLE_STATUS:
                last = ApiError(status, "unavailable", f"the upload API answered {status}")
                time.sleep(self.retry.delay(attempt))
                continue
            try:
                answer = json.loads(payload or b"{}")
            except ValueError:
                answer = {"message": payload[:200].decode(errors="replace")}
            if not isinstance(answer, dict):
                answer = {"message": f"HTTP {status} with an answer that is not a JSON object"}
            if status >= 400:
                message = str(answer.get("message") or answer.get("Message") or f"HTTP {status}")
                if status == 403:
                    message = f"{message}; {self._auth_hint()}"
                raise ApiError(status, str(answer.get("error", "http_error")), message)
            return dict(answer)
        tries = f"after {attempt + 1} attempt{'s' if attempt else ''}"
        if isinstance(last, TimeoutError):
            why = f"did not answer within {self.timeout:g} s, {tries}"
        elif isinstance(last, ApiError):
            why = f"answered {last.status} (busy or failing) {tries}"
        else:
            why = f"could not be reached {tries} ({type(last).__name__}: {last})"
        raise UploadError(
            f"the upload API at {self.base_url} {why}; check the network and the --api URL, then run "
            "the same command again to resume"
        )

    def _auth_hint(self) -> str:
        """What to set when the API refuses the caller (403)."""
        host = urlsplit(self.base_url).hostname or ""
        sigv4 = (
            "the API in AWS wants requests signed with SigV4: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) of an identity allowed execute-api:Invoke"
        )
        if ".execute-api." in host:
            return sigv4 + (" (those set were refused)" if self.credentials else "")
        if self.token:
            return (
                "the token sent was refused: give the one the API's operator (or dicomflow local-api) "
                "printed, with --token or DICOMFLOW_API_TOKEN"
            )
        return (
            "a local API (dicomflow local-api) wants its token: --token or DICOMFLOW_API_TOKEN; "
            + sigv4.replace("the API in AWS", "an API in AWS")
        )


def check_api_url(url: str) -> str:
    """The API's base URL without a trailing slash, or an :class:`UploadError` saying what a URL
    looks like.

    Examples
    --------
    >>> check_api_url("http://127.0.0.1:8080/")
    'http://127.0.0.1:8080'
    >>> check_api_url("notaurl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    dicomflow.errors.UploadError: --api 'notaurl' is not an http(s) URL with a host; ...
    """
    try:
        split = urlsplit(str(url).strip())
        valid = split.scheme in ("http", "https") and bool(split.hostname) and split.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        shown = str(url) if len(str(url)) <= 80 else str(url)[:77] + "..."
        raise UploadError(
            f"--api {shown!r} is not an http(s) URL with a host; give the API's base URL, e.g. "
            "http://127.0.0.1:8080 (dicomflow local-api) or "
            "https://<id>.execute-api.<region>.amazonaws.com/v1"
        )
    return str(url).strip().rstrip("/")


def _region_of(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if "execute-api" in parts and parts.index("execute-api") + 1 < len(parts):
        return parts[parts.index("execute-api") + 1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


# -- the scan folder ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFile:
    name: str
    path: Path
    size: int
    mtime_ns: int


def scan_folder(root: Path, names: Sequence[str] | None = None) -> list[LocalFile]:
    """The scan's files (sorted POSIX names): the ``names`` given (a device's manifest lists them),
    else every regular file but hidden ones and the sidecars (:func:`dicomflow.manifest.is_scan_file`).
    A listed file that is missing is an :class:`UploadError` naming it by position, not by name."""
    if names is not None:
        out = []
        for index, rel in enumerate(sorted(names)):
            check_relative_name(rel, where=f"manifest file {index}")
            path = root / rel
            if not path.is_file():
                raise UploadError(
                    f"file {index} of the manifest (sorted by name) is not in {root} ({rel}); restore "
                    "it or upload without the manifest"
                )
            st = path.stat()
            out.append(LocalFile(rel, path, st.st_size, st.st_mtime_ns))
        return out
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not is_scan_file(rel) or not path.is_file():
            continue
        st = path.stat()
        out.append(LocalFile(rel, path, st.st_size, st.st_mtime_ns))
    return out


def hash_file(path: Path, part_size: int) -> tuple[str, list[str]]:
    """SHA-256 of the whole file and of each part, from one read. The two digests run in two threads
    (hashlib releases the GIL). Hashing the parts in the same read as the manifest's digest is what
    ties them together: a part whose bytes change later no longer matches the checksum signed into
    its URL, so storage refuses it (S3) or the API's composite check does (moto).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "f"; _ = p.write_bytes(b"abc")
    >>> whole, parts = hash_file(p, 5 * 1024 * 1024)
    >>> whole == parts[0] == hashlib.sha256(b"abc").hexdigest()
    True
    """
    size = path.stat().st_size
    if is_single_put(size, part_size):
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return digest, [digest]
    whole = hashlib.sha256()
    parts: list[str] = []
    current = hashlib.sha256()
    filled = 0
    with ThreadPoolExecutor(max_workers=1) as pool, open(path, "rb", buffering=0) as fh:
        pending = None
        while chunk := fh.read(min(_HASH_CHUNK, part_size - filled)):
            if pending is not None:
                pending.result()
            pending = pool.submit(whole.update, chunk)
            current.update(chunk)
            filled += len(chunk)
            if filled == part_size:
                parts.append(current.hexdigest())
                current, filled = hashlib.sha256(), 0
        if pending is not None:
            pending.result()
    if filled:
        parts.append(current.hexdigest())
    return whole.hexdigest(), parts


# -- the uploader -------------------------------------------------------------------------------------


@dataclass
class UploadResult:
    scan_id: str
    status: str
    files: int
    bytes_total: int
    bytes_sent: int = 0
    parts_sent: int = 0
    urls_refreshed: int = 0
    retries: int = 0
    resumed: bool = False
    already_uploaded: bool = False
    seconds: float = 0.0


@dataclass
class _FileState:
    index: int
    local: LocalFile
    part_size: int
    count: int
    method: str
    hashes: list[str]
    pending: set[int] = field(default_factory=set)
    restarts: int = 0


class _Stop(Exception):
    """Raised in workers once the upload is stopping."""


class Uploader:
    """Uploads scan folders through the upload API at ``api_url``.

    Parameters
    ----------
    api_url
        The API's base URL (``https://<id>.execute-api.<region>.amazonaws.com/<stage>`` or the local
        gateway's).
    workers
        Parts in flight at once (default: 4, or 10 when most files are small enough for one PUT).
    part_size
        The part size the device proposes (the API may choose another; then parts are re-hashed).
    token, credentials
        The local gateway's token; AWS credentials to sign API calls with SigV4 (default: from the
        environment).
    progress
        Show progress on stderr (a bar on a terminal).

    Examples
    --------
    >>> Uploader("http://127.0.0.1:1", workers=2).workers
    2
    """

    def __init__(
        self,
        api_url: str,
        *,
        workers: int | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        token: str | None = None,
        credentials: AwsCredentials | None = None,
        retry: RetryPolicy | None = None,
        progress: bool = True,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if workers is not None and not 1 <= workers <= MAX_WORKERS:
            raise UploadError(f"--workers must be a whole number from 1 to {MAX_WORKERS}, not {workers}")
        if not timeout > 0:
            raise UploadError(f"the timeout must be a number of seconds > 0, not {timeout}")
        self.api = ApiClient(
            api_url,
            token=token,
            credentials=credentials or AwsCredentials.from_env(),
            retry=retry,
            timeout=timeout,
        )
        self.workers = workers or DEFAULT_WORKERS
        self._workers_given = workers is not None
        self.part_size = part_size
        self.retry = retry or RetryPolicy()
        self.show_progress = progress
        self.timeout = timeout
        self.complete_batch = _COMPLETE_BATCH
        self._batch_complete = True
        self._conns = _Connections(timeout)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- public --------------------------------------------------------------------------------------

    def upload(
        self,
        folder: str | Path,
        *,
        device_id: str,
        scan_type: str,
        device_settings: Mapping[str, Any] | None = None,
        names: Sequence[str] | None = None,
    ) -> UploadResult:
        """Upload (or resume uploading) the scan in ``folder``; returns when the scan is UPLOADED.

        ``names`` limits the scan to those files (relative POSIX names), e.g. the ones a device's
        ``manifest.json`` lists; by default every file in the folder is part of the scan."""
        started = time.monotonic()
        root = Path(folder)
        if not root.is_dir():
            raise UploadError(f"{root} is not a folder; give the folder that holds the scan's files")
        journal = Journal.load(root)
        self._urls: dict[tuple[int, int], tuple[str, dict[str, str], float]] = {}
        self._url_ttl = 900.0
        local = scan_folder(root, names)
        if not local:
            raise UploadError(f"{root} holds no files to upload")
        self._names = [f.name for f in local]
        try:
            return self._upload(journal, root, local, started, device_id, scan_type, device_settings)
        except UploadInterrupted:
            raise
        except DicomflowError as exc:
            # The API and the manifest name files by position; the device has the names.
            named = name_files(str(exc), self._names)
            if named == str(exc):
                raise
            raise UploadError(named) from None

    def _upload(
        self,
        journal: Journal,
        root: Path,
        local: Sequence[LocalFile],
        started: float,
        device_id: str,
        scan_type: str,
        device_settings: Mapping[str, Any] | None,
    ) -> UploadResult:
        server = self._confirm(journal, root) if journal.state.get("scan_id") else None
        if server is not None and server.get("status") not in ("UPLOADING", "FAILED"):
            scan_id = journal.state["scan_id"]
            if [(f.name, f.size, f.mtime_ns) for f in local] != [
                (f["name"], f["size"], f["mtime_ns"]) for f in journal.state["files"]
            ]:
                raise UploadError(
                    f"{root} was uploaded as scan {scan_id}, and its files changed since; to upload them "
                    f"as a new scan, delete {journal.state_path} and run the command again"
                )
            journal.state.update(done=True, status=str(server.get("status")))
            journal.save()
            return UploadResult(
                scan_id,
                str(server.get("status")),
                len(journal.state["files"]),
                int(server.get("bytes_total") or journal.state.get("bytes_total", 0)),
                already_uploaded=True,
            )
        if server is not None and server.get("status") == "FAILED":
            raise UploadError(
                f"scan {journal.state['scan_id']} has FAILED ({server.get('reason', 'no reason given')}); "
                f"delete {journal.state_path} and run the command again to upload it as a new scan"
            )
        if not self._workers_given:
            small = sum(is_single_put(f.size, choose_part_size(f.size, self.part_size)) for f in local)
            self.workers = DEFAULT_WORKERS_SMALL_FILES if small * 2 > len(local) else DEFAULT_WORKERS
        resumed = self._prepare(journal, root, local, device_id, scan_type, device_settings)
        files = self._file_states(journal, local)
        result = UploadResult(
            journal.state["scan_id"],
            "UPLOADING",
            len(files),
            sum(f.local.size for f in files),
            resumed=resumed,
        )
        if resumed and server is not None:
            self._apply_server_state(journal, files, server)
        already = sum(_bytes_done(f) for f in files)
        progress = Progress(result.bytes_total, already=already, enabled=self.show_progress)
        if resumed:
            progress.message(
                f"resuming scan {result.scan_id}: {already} of {result.bytes_total} bytes already uploaded"
            )
        progress.start()
        try:
            self._run(journal, files, result, progress)
        except KeyboardInterrupt:
            self._stop.set()
            raise UploadInterrupted(
                f"interrupted; scan {result.scan_id} is {progress.done} of {result.bytes_total} bytes "
                f"uploaded and recorded in {journal.state_path}. Run the same command again to resume."
            ) from None
        progress.finish()
        answer = self.api.call("POST", f"/scans/{result.scan_id}/complete", {})
        result.status = str(answer.get("status"))
        journal.state.update(done=True, status=result.status, bytes_total=result.bytes_total)
        journal.save()
        result.seconds = time.monotonic() - started
        return result

    def _say(self, text: str) -> None:
        if self.show_progress:
            print(text, file=sys.stderr, flush=True)

    def _confirm(self, journal: Journal, root: Path) -> dict[str, Any] | None:
        """What the server holds of the journal's scan: its status and every file's state (see
        :meth:`_server_scan`); None when the journal must be forgotten (another API, or a scan the
        server does not know), and then it has been."""
        scan_id = journal.state["scan_id"]
        if journal.state.get("api") != self.api.base_url:
            self._say(
                f"{root} was being uploaded to another API (scan {scan_id}); uploading it as a new scan "
                f"to {self.api.base_url}"
            )
            journal.forget_scan()
            journal.state["api"] = self.api.base_url
            journal.save()
            return None
        self._say(f"scan {scan_id}: asking the upload API what it holds")
        try:
            return self._server_scan(scan_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
        self._say(
            f"the upload API does not know scan {scan_id} (a new server, or the scan was removed); "
            "uploading the folder as a new scan"
        )
        journal.forget_scan()
        journal.save()
        return None

    def _server_scan(self, scan_id: str) -> dict[str, Any]:
        """``GET /scans/{id}`` with every file's state (and the URLs of single PUTs still to send),
        page by page; an API from before the file list answers the status alone."""
        answer = self.api.call("GET", f"/scans/{scan_id}?files_from=0&urls=1")
        if "files" not in answer:
            return answer
        files = list(answer["files"])
        following = answer.get("next_file")
        while following is not None:
            page = self.api.call("GET", f"/scans/{scan_id}?files_from={int(following)}&urls=1")
            files.extend(page.get("files", []))
            following = page.get("next_file")
            if not page.get("files"):
                break
        answer["files"] = files
        return answer

    # -- preparing -----------------------------------------------------------------------------------

    def _prepare(
        self,
        journal: Journal,
        root: Path,
        local: Sequence[LocalFile],
        device_id: str,
        scan_type: str,
        device_settings: Mapping[str, Any] | None,
    ) -> bool:
        """Reuse the journal if it describes these files; else hash them and create the scan.
        True when resuming a scan the API already knows."""
        recorded = journal.state.get("files")
        same = recorded is not None and [(f["name"], f["size"], f["mtime_ns"]) for f in recorded] == [
            (f.name, f.size, f.mtime_ns) for f in local
        ]
        if journal.state.get("scan_id") and not same:
            raise UploadError(
                f"the files in {root} changed since scan {journal.state['scan_id']} began uploading; to "
                f"upload them as a new scan, delete {journal.state_path} and run the command again"
            )
        if not same:
            for f in local:
                check_relative_name(f.name, where=f"file {f.name!r}")
            entries = self._hash_all(local)
            manifest = ScanManifest(
                device_id=device_id,
                scan_type=ScanType.parse(scan_type),
                files=tuple(m for m, _ in entries),
                device_settings=DeviceSettings.from_dict(device_settings),
            )
            journal.state.update(
                api=self.api.base_url,
                manifest=manifest.to_dict(),
                files=[
                    {
                        "name": f.name,
                        "size": f.size,
                        "mtime_ns": f.mtime_ns,
                        "part_size": choose_part_size(f.size, self.part_size),
                        "part_sha256": hashes,
                    }
                    for f, (_, hashes) in zip(local, entries, strict=True)
                ],
            )
            journal.save()
        if journal.state.get("scan_id"):
            return True
        if same:  # a new scan of files hashed before: this run's metadata, the hashes kept
            journal.state["manifest"] = ScanManifest(
                device_id=device_id,
                scan_type=ScanType.parse(scan_type),
                files=tuple(
                    ManifestFile(f["name"], f["size"], f["sha256"])
                    for f in journal.state["manifest"]["files"]
                ),
                device_settings=DeviceSettings.from_dict(device_settings),
            ).to_dict()
            journal.state["api"] = self.api.base_url
        plan = self.api.call(
            "POST",
            "/scans",
            {
                "manifest": journal.state["manifest"],
                "part_size": self.part_size,
                "part_sha256": [_known_prefix(f["part_sha256"]) for f in journal.state["files"]],
            },
        )
        for i, (record, planned) in enumerate(zip(journal.state["files"], plan["files"], strict=True)):
            if planned["method"] == "single":
                record["part_sha256"] = [journal.state["manifest"]["files"][i]["sha256"]]
            elif planned["part_size"] != record["part_size"]:
                # The API chose another part size: hash again, in one read with the whole file, so
                # the parts stay tied to the manifest's digest.
                path = root / record["name"]
                whole, record["part_sha256"] = hash_file(path, planned["part_size"])
                if whole != journal.state["manifest"]["files"][i]["sha256"]:
                    raise UploadError(
                        f"files[{i}] changed while the upload was starting; run the command again"
                    )
            record["part_size"] = planned["part_size"]
            record["method"] = planned["method"]
            record["count"] = planned["part_count"]
        journal.state["scan_id"] = plan["scan_id"]
        journal.save()
        self._urls = {
            (f["index"], u["part_number"]): (u["url"], u["headers"], time.monotonic())
            for f in plan["files"]
            for u in f["urls"]
        }
        self._url_ttl = float(plan.get("url_expiry_s", 900))
        return False

    def _hash_all(self, local: Sequence[LocalFile]) -> list[tuple[ManifestFile, list[str]]]:
        def one(f: LocalFile) -> tuple[ManifestFile, list[str]]:
            whole, parts = hash_file(f.path, choose_part_size(f.size, self.part_size))
            return ManifestFile(f.name, f.size, whole), parts

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, 4))) as pool:
            return list(pool.map(one, local))

    def _file_states(self, journal: Journal, local: Sequence[LocalFile]) -> list[_FileState]:
        files = []
        for index, (f, record) in enumerate(zip(local, journal.state["files"], strict=True)):
            count = int(record.get("count") or part_count(f.size, record["part_size"]))
            method = record.get("method") or ("single" if count == 1 else "multipart")
            hashes = list(record["part_sha256"]) + [""] * max(0, count - len(record["part_sha256"]))
            for n in range(1, count + 1):  # parts hashed while uploading, before a restart
                hashes[n - 1] = hashes[n - 1] or journal.part_sha256.get((index, n), "")
            state = _FileState(index, f, record["part_size"], count, method, hashes[:count])
            if index not in set(journal.state.get("complete", [])):
                state.pending = {n for n in range(1, count + 1) if (index, n) not in journal.parts}
                if method == "single" and not state.pending:
                    state.pending = set()
            files.append(state)
        self._files = files
        self._journal = journal
        return files

    def _apply_server_state(
        self, journal: Journal, files: list[_FileState], server: Mapping[str, Any]
    ) -> None:
        """The server is the authority on resume: a file is complete when the server says so, a part
        counts when S3 holds it with the right size (the journal's "complete" is only a cache)."""
        if server.get("status") != "UPLOADING":
            for f in files:
                f.pending = set()
            return
        entries = server.get("files")
        if entries is None:
            self._load_server_parts_one_by_one(journal, files)
            return
        scan_id = journal.state["scan_id"]
        if len(entries) != len(files):
            raise UploadError(
                f"scan {scan_id} has {len(entries)} file(s) at the upload API and {len(files)} in the "
                f"journal; delete {journal.state_path} and run the command again to upload a new scan"
            )
        now = time.monotonic()
        self._url_ttl = float(server.get("url_expiry_s", self._url_ttl))
        complete = set()
        for f, entry in zip(files, entries, strict=True):
            if (int(entry["index"]), int(entry["part_count"])) != (f.index, f.count):
                raise UploadError(
                    f"files[{f.index}] is planned otherwise at the upload API than in the journal; delete "
                    f"{journal.state_path} and run the command again to upload a new scan"
                )
            if entry.get("state") == "complete":
                f.pending = set()
                complete.add(f.index)
                continue
            if f.method == "single":
                # S3 cannot list a single PUT before completion: the journal says whether it was
                # sent; completing the file tells if the object is missing, and then it is sent again.
                f.pending = set() if (f.index, 1) in journal.parts else {1}
                with self._lock:
                    for u in entry.get("urls", []):
                        self._urls[(f.index, int(u["part_number"]))] = (u["url"], u["headers"], now)
                continue
            have = {int(p["part_number"]): int(p["size"]) for p in entry.get("parts", [])}
            f.pending = set()
            for n in range(1, f.count + 1):
                start, end = part_range(f.local.size, f.part_size, n)
                if have.get(n) != end - start:
                    f.pending.add(n)
        journal.state["complete"] = sorted(complete)

    def _load_server_parts_one_by_one(self, journal: Journal, files: list[_FileState]) -> None:
        """An API from before ``?files_from``: one request per file not known complete."""
        complete = set(journal.state.get("complete", []))
        for f in files:
            if f.index in complete:
                continue
            answer = self.api.call("GET", f"/scans/{journal.state['scan_id']}/files/{f.index}")
            if answer.get("state") == "complete":
                f.pending = set()
                complete.add(f.index)
                continue
            have = {p["part_number"]: p["size"] for p in answer.get("parts", [])}
            f.pending = set()
            for n in range(1, f.count + 1):
                start, end = part_range(f.local.size, f.part_size, n)
                if f.method == "single":
                    if (f.index, 1) not in journal.parts:
                        f.pending.add(1)
                elif have.get(n) != end - start:
                    f.pending.add(n)
        journal.state["complete"] = sorted(complete)

    # -- uploading -----------------------------------------------------------------------------------

    def _run(
        self, journal: Journal, files: list[_FileState], result: UploadResult, progress: Progress
    ) -> None:
        tasks: queue.Queue[tuple[_FileState | None, int] | None] = queue.Queue()
        self._tasks = tasks
        self._outstanding = 0
        self._to_complete: list[_FileState] = []
        self._errors: list[BaseException] = []
        self._all_done = threading.Event()
        self._stop.clear()
        for f in files:
            if f.pending:
                for n in sorted(f.pending):
                    self._enqueue(f, n)
            elif f.index not in set(journal.state.get("complete", [])):
                self._enqueue(f, 0)  # all parts landed before the restart: only completion is left
        if self._outstanding == 0:
            self._all_done.set()
        threads = [
            threading.Thread(target=self._worker, args=(result, progress), name=f"upload-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in threads:
            t.start()
        interrupted = False
        try:
            while not self._all_done.wait(0.2):
                pass
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            self._stop.set()
            for _ in threads:
                tasks.put(None)
            # On Ctrl-C, parts in flight get a moment to land; the rest is resumed later (workers are
            # daemon threads, so the process does not wait for a slow network).
            deadline = time.monotonic() + (3.0 if interrupted else self.timeout)
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._errors:
            error = self._errors[0]
            if isinstance(error, DicomflowError):
                raise error
            raise UploadError(
                f"the upload failed ({type(error).__name__}: {error}); run the same command again to resume"
            ) from error

    def _enqueue(self, f: _FileState, part: int) -> None:
        with self._lock:
            self._outstanding += 1
        self._tasks.put((f, part))

    def _task_done(self) -> None:
        with self._lock:
            if self._outstanding == 1 and self._to_complete and not self._stop.is_set():
                # The last task: the files still waiting for a batch completion get it now (this
                # task's count passes to the completion's).
                self._tasks.put((None, 0))
                return
            self._outstanding -= 1
            if self._outstanding == 0:
                self._all_done.set()

    def _worker(self, result: UploadResult, progress: Progress) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            f, part = task
            try:
                if self._stop.is_set():
                    raise _Stop
                if f is None:
                    with self._lock:
                        batch, self._to_complete = self._to_complete, []
                    self._complete_files(batch, progress)
                    continue
                if part:
                    self._upload_part(f, part, result, progress)
                    with self._lock:
                        f.pending.discard(part)
                        last = not f.pending
                else:
                    last = True
                if last and f.method == "single" and self._batch_complete:
                    # Many small files: completed (and verified) by the API in batches, not one by one.
                    with self._lock:
                        self._to_complete.append(f)
                        batch = []
                        if len(self._to_complete) >= self.complete_batch:
                            batch, self._to_complete = self._to_complete, []
                    if batch:
                        self._complete_files(batch, progress)
                elif last:
                    self._complete_file(f, progress)
            except _Stop:
                pass
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                with self._lock:
                    self._errors.append(exc)
                self._stop.set()
                self._all_done.set()
            finally:
                self._task_done()

    def _upload_part(self, f: _FileState, part: int, result: UploadResult, progress: Progress) -> None:
        start, end = part_range(f.local.size, f.part_size, part)
        payload = FileRange(f.local.path, start, end)
        sha = f.hashes[part - 1]
        refreshes = 0
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Stop
            url, headers = self._url(f, part, sha, force=refreshes > 0)
            split = urlsplit(url)
            try:
                status, response_headers, body = _request(
                    self._conns,
                    "PUT",
                    url,
                    payload,
                    {
                        **headers,
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(end - start),
                    },
                )
            except (ShortFileError, FileNotFoundError):
                self._conns.drop(split.scheme, split.netloc)
                raise _file_changed(f) from None
            except OSError as exc:
                status, response_headers, body = 0, {}, str(exc).encode()
                self._conns.drop(split.scheme, split.netloc)
            if status == 200:
                break
            code = _s3_code(body)
            if status == 412 and f.method == "single":
                # The URL creates only (If-None-Match: *) and an object is there: an earlier attempt
                # landed (its answer was lost). Completing the file checks its bytes.
                break
            if status == 403 and refreshes < 5:
                refreshes += 1  # expired (or revoked) URL: a fresh one, at once
                with self._lock:
                    result.urls_refreshed += 1
                continue
            if status == 400 and code in ("BadDigest", "XAmzContentChecksumMismatch", "InvalidDigest"):
                raise _file_changed(f)
            if status == 404 and code == "NoSuchUpload":
                raise _Restart(f)
            retryable = status in _RETRYABLE_STATUS or (
                status == 409 and code == "ConditionalRequestConflict"
            )
            if (status == 0 or retryable) and attempt + 1 < self.retry.attempts:
                with self._lock:
                    result.retries += 1
                time.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            raise UploadError(
                f"storage refused part {part} of files[{f.index}] (HTTP {status} {code or body[:100]!r}) "
                f"after {attempt + 1} attempt(s); run the same command again to resume"
            )
        etag = response_headers.get("etag", "")
        self._journal.record_part(f.index, part, etag, sha)
        with self._lock:
            result.parts_sent += 1
            result.bytes_sent += end - start
        progress.advance(end - start)

    def _url(self, f: _FileState, part: int, sha: str, *, force: bool) -> tuple[str, dict[str, str]]:
        key = (f.index, part)
        with self._lock:
            cached = self._urls.get(key)
        # Refresh ahead of expiry: a URL must still be valid when the last byte of the part arrives.
        if cached and not force and time.monotonic() - cached[2] < self._url_ttl * 0.8:
            return cached[0], cached[1]
        wanted = [{"part_number": part, "sha256": sha}]
        with self._lock:
            for n in sorted(f.pending):
                if len(wanted) >= 16:
                    break
                if n != part and f.hashes[n - 1] and (f.index, n) not in self._urls:
                    wanted.append({"part_number": n, "sha256": f.hashes[n - 1]})
        answer = self.api.call(
            "POST", f"/scans/{self._journal.state['scan_id']}/files/{f.index}/parts", {"parts": wanted}
        )
        now = time.monotonic()
        self._url_ttl = float(answer.get("url_expiry_s", self._url_ttl))
        with self._lock:
            for u in answer["urls"]:
                self._urls[(f.index, u["part_number"])] = (u["url"], u["headers"], now)
            fresh = self._urls[key]
        return fresh[0], fresh[1]

    def _complete_file(self, f: _FileState, progress: Progress) -> None:
        scan_id = self._journal.state["scan_id"]
        body = {"part_sha256": f.hashes} if f.method == "multipart" else {}
        try:
            self.api.call("POST", f"/scans/{scan_id}/files/{f.index}/complete", body)
        except ApiError as exc:
            self._refused(f, exc, progress)
            return
        self._completed([f])

    def _complete_files(self, batch: Sequence[_FileState], progress: Progress) -> None:
        """Complete single-PUT files in one request (``POST /scans/{id}/files/complete``); an API
        without that route gets them one by one."""
        if not batch:
            return
        scan_id = self._journal.state["scan_id"]
        try:
            answer = self.api.call(
                "POST", f"/scans/{scan_id}/files/complete", {"files": [{"index": f.index} for f in batch]}
            )
        except ApiError as exc:
            # An API from before the route (API Gateway answers an unknown route 403 "Missing
            # Authentication Token"): one request per file, which fails on its own if auth was the cause.
            if exc.status in (403, 404, 405) and exc.code != "not_found":
                self._batch_complete = False
                for f in batch:
                    self._complete_file(f, progress)
                return
            raise UploadError(f"{len(batch)} file(s) could not be completed: {exc}") from None
        by_index = {f.index: f for f in batch}
        done = []
        for entry in answer.get("files", []):
            f = by_index.pop(int(entry["index"]))
            if "error" not in entry:
                done.append(f)
            elif entry["error"] == "unavailable":
                self._complete_file(f, progress)  # retried with backoff on its own
            else:
                self._refused(f, ApiError(409, str(entry["error"]), str(entry.get("message", ""))), progress)
        if by_index:
            raise UploadError(
                f"the upload API did not answer for {len(by_index)} file(s) it was asked to complete; "
                "run the same command again to resume"
            )
        self._completed(done)

    def _refused(self, f: _FileState, exc: ApiError, progress: Progress) -> None:
        """A completion the API refused: send the file again when that can help, else stop."""
        if exc.code == "conflict" and f.method == "single" and f.restarts == 0:
            f.restarts += 1  # the journal said it landed, the storage disagrees: send it again
            with self._lock:
                f.pending = {1}
            self._enqueue(f, 1)
            return
        if exc.code != "checksum_mismatch":
            raise UploadError(f"files[{f.index}] could not be completed: {exc}") from None
        self._restart_file(f, progress, str(exc))

    def _completed(self, done: Sequence[_FileState]) -> None:
        if not done:
            return
        with self._lock:
            complete = set(self._journal.state.get("complete", []))
            complete.update(f.index for f in done)
            self._journal.state["complete"] = sorted(complete)
        self._journal.save()

    def _restart_file(self, f: _FileState, progress: Progress, why: str) -> None:
        """The API discarded the file (its bytes did not match the manifest): check the local file still
        matches it, then send it again, once."""
        whole, _ = hash_file(f.local.path, f.part_size)
        expected = self._journal.state["manifest"]["files"][f.index]["sha256"]
        if whole != expected:
            raise _file_changed(f)
        if f.restarts >= 1:
            raise UploadError(
                f"files[{f.index}] was refused twice ({why}); check the network path to storage, "
                "then run the same command again to resume"
            )
        f.restarts += 1
        progress.message(f"files[{f.index}] was refused by the integrity check; sending it again")
        with self._lock:
            for n in range(1, f.count + 1):
                self._urls.pop((f.index, n), None)
            f.pending = set(range(1, f.count + 1))
        for n in range(1, f.count + 1):
            self._enqueue(f, n)


class _Restart(UploadError):
    def __init__(self, f: _FileState) -> None:
        super().__init__(
            f"the upload of files[{f.index}] no longer exists at the storage (the scan was aborted, or the "
            "file's upload was restarted); run the same command again to resume"
        )


def _file_changed(f: _FileState) -> UploadError:
    return UploadError(
        f"files[{f.index}] changed on the device after the upload began (its bytes no longer match the "
        "manifest's checksums); make sure nothing writes into the scan folder, then delete "
        ".dicomflow-upload.json in it and upload the scan again"
    )


_FILE_REF = re.compile(r"files\[(\d+)\](?:\.(name|size|sha256))?")
_FIELD_WORDS = {"name": "the name of ", "size": "the size of ", "sha256": "the SHA-256 of "}


def name_files(message: str, names: Sequence[str]) -> str:
    """``message`` with every ``files[N]`` (how the API and the manifest point at a file) replaced by
    the file's path in the scan folder, for the device's own terminal.

    Examples
    --------
    >>> name_files("files[1].size must be a whole number of bytes >= 1", ["a.dcm", "b/c.dcm"])
    'the size of b/c.dcm must be a whole number of bytes >= 1'
    >>> name_files("files[0] lacks 2 of 3 parts; files[9] too", ["a.dcm"])
    'a.dcm lacks 2 of 3 parts; files[9] too'
    """

    def named(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index >= len(names):
            return match.group(0)
        return _FIELD_WORDS.get(match.group(2) or "", "") + names[index]

    return _FILE_REF.sub(named, message)


def _known_prefix(hashes: Sequence[str]) -> list[str]:
    out = []
    for h in hashes:
        if not h:
            break
        out.append(h)
    return out


def _bytes_done(f: _FileState) -> int:
    if not f.pending:
        return f.local.size
    done = 0
    for n in range(1, f.count + 1):
        if n not in f.pending:
            start, end = part_range(f.local.size, f.part_size, n)
            done += end - start
    return done


def _s3_code(body: bytes) -> str:
    start = body.find(b"<Code>")
    end = body.find(b"</Code>")
    return body[start + 6 : end].decode(errors="replace") if 0 <= start < end else ""


def upload_scan(
    folder: str | Path,
    api_url: str,
    *,
    device_id: str,
    scan_type: str,
    device_settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> UploadResult:
    """Upload one scan folder (see :class:`Uploader` for ``options``)."""
    return Uploader(api_url, **options).upload(
        folder, device_id=device_id, scan_type=scan_type, device_settings=device_settings
    )


__all__ = [
    "ApiClient",
    "ApiError",
    "AwsCredentials",
    "RetryPolicy",
    "UploadInterrupted",
    "UploadResult",
    "Uploader",
    "check_api_url",
    "hash_file",
    "name_files",
    "scan_folder",
    "sigv4_headers",
    "upload_scan",
]
