"""Upload API: a thin Lambda handler behind API Gateway (REST API, IAM/SigV4 authorisation).

Routes parse the request, call :class:`dicomflow.upload.service.UploadService` and return JSON.
Nothing here logs a body or an event (manifests carry file names, which can carry patient data);
the trace never captures a response. Routes are not traced one by one: the tracer would log every
expected 4xx as an error. Errors map to HTTP: 400 invalid input, 404 no such scan or file,
409 not in a state for this request (with what to do), 413 over a limit; each with its reason.
Every error has one shape, ``{"error": code, "message": reason}``: also an unknown route (404
``not_found``), a known path with another method (405 ``method_not_allowed``, with ``Allow``) and
an unexpected failure (500 ``internal``, the class name only).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext

from dicomflow.errors import DicomflowError, InvalidInputError, TransientStorageError
from dicomflow.settings import get_settings
from dicomflow.upload.service import UploadService, build_service

logger = Logger(service="upload-api")
tracer = Tracer(service="upload-api")
app = APIGatewayRestResolver()

_service: UploadService | None = None


def service() -> UploadService:
    """The service, built once per execution environment from the settings."""
    global _service
    if _service is None:
        _service = build_service(get_settings())
    return _service


def use_service(new: UploadService | None) -> None:
    """Serve with ``new`` (the local stack and tests inject their processor this way)."""
    global _service
    _service = new


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def _body() -> bytes:
    event = app.current_event
    raw = event.body or ""
    return event.decoded_body.encode("utf-8") if event.is_base64_encoded else raw.encode("utf-8")


@app.post("/scans")
def create_scan() -> Response:
    plan = service().create_scan(_body())
    logger.info("scan created", extra={"scan_id": plan["scan_id"], "files": len(plan["files"])})
    return _json(201, plan)


@app.get("/scans/<scan_id>")
def get_scan(scan_id: str) -> Response:
    # ?files_from=N lists the files from position N (a resuming device's one call); &urls=1 adds the
    # URLs of single-PUT files still uploading.
    query = app.current_event.query_string_parameters or {}
    files_from = query.get("files_from")
    if files_from is not None and not files_from.isdigit():
        raise InvalidInputError("files_from must be a file's position (0, 1, ...)")
    return _json(
        200,
        service().progress(
            scan_id,
            files_from=int(files_from) if files_from is not None else None,
            urls=query.get("urls") in ("1", "true"),
        ),
    )


@app.delete("/scans/<scan_id>")
def abort_scan(scan_id: str) -> Response:
    result = service().abort(scan_id)
    logger.info("scan aborted", extra={"scan_id": scan_id, "uploads_aborted": result["uploads_aborted"]})
    return _json(200, result)


@app.post("/scans/<scan_id>/complete")
def complete_scan(scan_id: str) -> Response:
    result = service().complete_scan(scan_id)
    logger.info("scan complete", extra={"scan_id": scan_id, "already": result["already_completed"]})
    return _json(200, result)


@app.get("/scans/<scan_id>/files/<index>")
def get_file(scan_id: str, index: str) -> Response:
    return _json(200, service().file_status(scan_id, index))


@app.post("/scans/<scan_id>/files/<index>/parts")
def part_urls(scan_id: str, index: str) -> Response:
    return _json(200, service().part_urls(scan_id, index, _body()))


@app.post("/scans/<scan_id>/files/complete")
def complete_files(scan_id: str) -> Response:
    return _json(200, service().complete_files(scan_id, _body()))


@app.post("/scans/<scan_id>/files/<index>/complete")
def complete_file(scan_id: str, index: str) -> Response:
    return _json(200, service().complete_file(scan_id, index, _body()))


@app.exception_handler(InvalidInputError)
def invalid_input(exc: InvalidInputError) -> Response:
    status = int(getattr(exc, "http_status", 400))
    code = str(getattr(exc, "code", "invalid_request"))
    logger.info("request refused", extra={"status": status, "code": code})
    return _json(status, {"error": code, "message": str(exc)})


@app.exception_handler(TransientStorageError)
def transient(exc: TransientStorageError) -> Response:
    logger.warning("transient storage error", extra={"error": type(exc).__name__})
    return _json(503, {"error": "unavailable", "message": "storage is busy; retry with backoff"})


@app.exception_handler(DicomflowError)
def internal(exc: DicomflowError) -> Response:
    # Our messages carry no patient data, but the device needs no internals: name the class only.
    logger.exception("request failed", extra={"error": type(exc).__name__})
    return _json(500, {"error": "internal", "message": f"the upload API failed ({type(exc).__name__})"})


@app.exception_handler(NotFoundError)
def no_route(exc: NotFoundError) -> Response:
    event = app.current_event
    method, path = event.http_method.upper(), event.path
    # The resolver's own routes: a path it serves with other methods is a 405, else a 404.
    allowed = sorted({r.method for r in (*app._static_routes, *app._dynamic_routes) if r.rule.match(path)})
    if allowed:
        return Response(
            status_code=405,
            content_type=content_types.APPLICATION_JSON,
            headers={"Allow": ", ".join(allowed)},
            body=json.dumps(
                {
                    "error": "method_not_allowed",
                    "message": f"{method} is not allowed here; use {' or '.join(allowed)}",
                }
            ),
        )
    return _json(404, {"error": "not_found", "message": f"no route for {method} {_shown(path)}"})


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response:
    # A bug: the class only (its message might quote a request value).
    logger.exception("request failed unexpectedly", extra={"error": type(exc).__name__})
    return _json(500, {"error": "internal", "message": f"the upload API failed ({type(exc).__name__})"})


def _shown(path: str) -> str:
    """A path to echo in an error: short, and printable (it is the caller's own input)."""
    clean = "".join(c if c.isprintable() else "?" for c in path)
    return clean if len(clean) <= 80 else clean[:77] + "..."


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
