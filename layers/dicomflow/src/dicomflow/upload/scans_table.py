"""The scans table: the only DynamoDB access of the upload API. Every status change is conditional.

One item per scan (sort key ``scan``) holding its status, and one item per file (sort key
``file#00000``, the file's position in the manifest) holding its multipart upload. The key schema is
data (:data:`KEY_SCHEMA`, :data:`ATTRIBUTE_DEFINITIONS`) so that the CDK table and the local table
are created from the same description.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, NoReturn

from dicomflow.errors import StorageError, TransientStorageError
from dicomflow.status import ScanStatus, check_transition

PARTITION_KEY = "scan_id"
SORT_KEY = "item"
SCAN_ITEM = "scan"
#: The scan item's list of transitions, ``{"status", "at", "reasons"?}`` each, oldest first.
HISTORY = "history"
KEY_SCHEMA = [
    {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
    {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
    {"AttributeName": SORT_KEY, "AttributeType": "S"},
]
_TRANSIENT = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
}


def file_item(index: int) -> str:
    """Sort key of the file at ``index`` in the manifest.

    Examples
    --------
    >>> file_item(7)
    'file#00007'
    """
    return f"file#{index:05d}"


def create_table(client: Any, name: str) -> None:
    """Create the table (on-demand). Used by the local stack; CDK declares the same schema."""
    client.create_table(
        TableName=name,
        KeySchema=KEY_SCHEMA,
        AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
        BillingMode="PAY_PER_REQUEST",
    )


#: Key attribute of the workflow handlers' idempotency records (powertools' DynamoDBPersistenceLayer
#: default) and the attribute its records expire by (the table's TTL).
IDEMPOTENCY_KEY = "id"
IDEMPOTENCY_EXPIRY = "expiration"


def create_idempotency_table(client: Any, name: str) -> None:
    """Create the idempotency table of the workflow's batch handlers (powertools idempotency:
    partition key ``id``, TTL on ``expiration``). Used by the local stack; CDK declares the same."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": IDEMPOTENCY_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": IDEMPOTENCY_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": IDEMPOTENCY_EXPIRY}
    )


class ScansTable:
    """Scan and file records.

    Parameters
    ----------
    table
        A boto3 DynamoDB ``Table`` resource.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def create_scan(self, scan: Mapping[str, Any], files: Iterable[Mapping[str, Any]]) -> None:
        """Write the file items, then the scan item (only if the scan id is new)."""
        scan_id = scan[PARTITION_KEY]
        try:
            self._put_items([{PARTITION_KEY: scan_id, **item} for item in files])
            self.table.put_item(
                Item={PARTITION_KEY: scan_id, SORT_KEY: SCAN_ITEM, **scan},
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
            )
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "create scan")

    def get_scan(self, scan_id: str) -> dict[str, Any] | None:
        return self._get(scan_id, SCAN_ITEM)

    def get_file(self, scan_id: str, index: int) -> dict[str, Any] | None:
        return self._get(scan_id, file_item(index))

    def files(self, scan_id: str, count: int | None = None) -> list[dict[str, Any]]:
        """Every file item of the scan, in manifest order. Given the scan's file ``count``, large
        scans are read as a few ranges of positions queried at once (each query waits on its pages
        one after the other)."""
        if count is None or count <= _QUERY_RANGE:
            return self._query_files(scan_id, None)
        ranges = [(start, min(start + _QUERY_RANGE, count) - 1) for start in range(0, count, _QUERY_RANGE)]
        with ThreadPoolExecutor(max_workers=min(_WRITERS, len(ranges))) as pool:
            parts = list(pool.map(lambda r: self._query_files(scan_id, r), ranges))
        return [item for part in parts for item in part]

    def _query_files(self, scan_id: str, positions: tuple[int, int] | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        names = {"#pk": PARTITION_KEY, "#sk": SORT_KEY}
        if positions is None:
            condition = "#pk = :pk AND begins_with(#sk, :prefix)"
            values: dict[str, Any] = {":pk": scan_id, ":prefix": "file#"}
        else:
            condition = "#pk = :pk AND #sk BETWEEN :first AND :last"
            values = {":pk": scan_id, ":first": file_item(positions[0]), ":last": file_item(positions[1])}
        kwargs: dict[str, Any] = {
            "TableName": self.table.name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ConsistentRead": True,
        }
        try:
            while True:
                response = self.table.meta.client.query(**kwargs)
                items.extend(_plain(item) for item in response.get("Items", []))
                if "LastEvaluatedKey" not in response:
                    return items
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "query files")

    def update_file(
        self, scan_id: str, index: int, *, expect_upload_id: str | None, values: Mapping[str, Any]
    ) -> bool:
        """Set ``values`` on a file that is still uploading with ``expect_upload_id``.
        False when another call got there first (the condition failed)."""
        names = {f"#a{i}": k for i, k in enumerate(values)}
        attrs = {f":v{i}": v for i, v in enumerate(values.values())}
        condition = "#state = :uploading"
        names["#state"] = "state"
        attrs[":uploading"] = "uploading"
        if expect_upload_id is not None:
            condition += " AND #upload_id = :expect"
            names["#upload_id"] = "upload_id"
            attrs[":expect"] = expect_upload_id
        return self._update(
            scan_id,
            file_item(index),
            "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            condition,
            names,
            attrs,
        )

    def put_files(self, scan_id: str, items: Iterable[Mapping[str, Any]]) -> None:
        """Write whole file items, 25 a request (BatchWriteItem), without conditions: only for
        writes that cannot race, such as marking single-PUT files complete whose objects storage
        holds (an object at a file's key never changes: its URLs create only)."""
        try:
            self._put_items([{**item, PARTITION_KEY: scan_id} for item in items])
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "put files")

    def _put_items(self, items: list[dict[str, Any]]) -> None:
        """BatchWriteItem, 25 items a request, a few requests in flight: a scan of 1500 files is 60
        requests, and one after the other the caller waits on each round trip in turn."""
        chunks = [items[i : i + _BATCH_WRITE] for i in range(0, len(items), _BATCH_WRITE)]
        if not chunks:
            return
        client = self.table.meta.client  # clients are thread-safe; resources are not

        def write(chunk: list[dict[str, Any]]) -> None:
            requests: list[Any] = [{"PutRequest": {"Item": item}} for item in chunk]
            for attempt in range(8):
                response = client.batch_write_item(RequestItems={self.table.name: requests})
                requests = response.get("UnprocessedItems", {}).get(self.table.name, [])
                if not requests:
                    return
                time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off, send the rest
            raise TransientStorageError(f"{len(requests)} item(s) stayed unprocessed; retry")

        if len(chunks) == 1:
            write(chunks[0])
            return
        with ThreadPoolExecutor(max_workers=min(_WRITERS, len(chunks))) as pool:
            list(pool.map(write, chunks))

    def get_files(self, scan_id: str, indices: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The file items at ``indices`` (consistent reads, 100 keys a request), by index; an index
        with no item is left out."""
        wanted = sorted(set(indices))
        client = self.table.meta.client
        out: dict[int, dict[str, Any]] = {}
        try:
            for start in range(0, len(wanted), _BATCH_GET):
                keys: list[dict[str, Any]] = [
                    {PARTITION_KEY: scan_id, SORT_KEY: file_item(i)}
                    for i in wanted[start : start + _BATCH_GET]
                ]
                while keys:
                    response = client.batch_get_item(
                        RequestItems={self.table.name: {"Keys": keys, "ConsistentRead": True}}
                    )
                    for item in response.get("Responses", {}).get(self.table.name, []):
                        plain = _plain(item)
                        out[int(plain["index"])] = plain
                    keys = response.get("UnprocessedKeys", {}).get(self.table.name, {}).get("Keys", [])
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "get files")
        return out

    def transition(
        self,
        scan_id: str,
        current: ScanStatus,
        new: ScanStatus,
        values: Mapping[str, Any] | None = None,
        *,
        at: str | None = None,
        reasons: list[Any] | None = None,
    ) -> bool:
        """Move the scan from ``current`` to ``new`` (a lifecycle-checked, conditional write) and set
        ``values`` with it. False when the scan was not in ``current`` any more: someone else moved it.

        The same write appends ``{"status", "at", "reasons"?}`` to the scan's ``history`` list, so
        the history holds exactly the transitions that happened, in order."""
        check_transition(current, new)
        at = at or _now()
        values = {"status": str(new), "updated_at": at, **(values or {})}
        names = {f"#a{i}": k for i, k in enumerate(values)}
        attrs: dict[str, Any] = {f":v{i}": v for i, v in enumerate(values.values())}
        names["#status"] = "status"
        attrs[":current"] = str(current)
        entry: dict[str, Any] = {"status": str(new), "at": at}
        if reasons:
            entry["reasons"] = reasons
        names["#history"] = HISTORY
        attrs[":entry"] = [entry]
        attrs[":empty"] = []
        return self._update(
            scan_id,
            SCAN_ITEM,
            "SET "
            + ", ".join(f"#a{i} = :v{i}" for i in range(len(values)))
            + ", #history = list_append(if_not_exists(#history, :empty), :entry)",
            "#status = :current",
            names,
            attrs,
        )

    def set_scan_values(
        self, scan_id: str, values: Mapping[str, Any], *, only_if_absent: str | None = None
    ) -> bool:
        """Set ``values`` on the scan item; with ``only_if_absent``, only if that attribute is unset."""
        names = {f"#a{i}": k for i, k in enumerate(values)}
        attrs = {f":v{i}": v for i, v in enumerate(values.values())}
        condition = "attribute_exists(#pk)"
        names["#pk"] = PARTITION_KEY
        if only_if_absent:
            names["#absent"] = only_if_absent
            condition += " AND attribute_not_exists(#absent)"
        return self._update(
            scan_id,
            SCAN_ITEM,
            "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values))),
            condition,
            names,
            attrs,
        )

    # -- internals --------------------------------------------------------------------------------

    def _get(self, scan_id: str, item: str) -> dict[str, Any] | None:
        try:
            response = self.table.get_item(Key={PARTITION_KEY: scan_id, SORT_KEY: item}, ConsistentRead=True)
        except Exception as exc:  # noqa: BLE001
            _raise(exc, "get item")
        found = response.get("Item")
        return _plain(found) if found else None

    def _update(
        self,
        scan_id: str,
        item: str,
        expression: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> bool:
        try:
            self.table.update_item(
                Key={PARTITION_KEY: scan_id, SORT_KEY: item},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except Exception as exc:  # noqa: BLE001
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            _raise(exc, "update item")
        return True


_BATCH_GET = 100  # BatchGetItem's limit
_BATCH_WRITE = 25  # BatchWriteItem's limit
_WRITERS = 4  # requests in flight at once for one large read or write
_QUERY_RANGE = 500  # positions per query when a large scan's files are read in ranges


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB numbers come back as Decimal; ours are whole numbers (also inside the history's
    lists and maps)."""
    return {k: _plain_value(v) for k, v in item.items()}


def _plain_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, list):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    return value


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _raise(exc: Exception, action: str) -> NoReturn:
    code = _code(exc)
    if code in _TRANSIENT or (not code and isinstance(exc, OSError)):
        raise TransientStorageError(
            f"scans table: {action} failed ({code or type(exc).__name__}); retry"
        ) from exc
    raise StorageError(f"scans table: {action} failed ({code or type(exc).__name__})") from exc
