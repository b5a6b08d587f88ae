"""Read an offline W&B run's history back from its ``run-*.wandb`` file, for the tests.

wandb (0.31) ships no Python reader for it: the file is the LevelDB log format that W&B's
old ``datastore`` module read (a 7-byte header ``:W&B``, magic 0xBEE1, version 0; then
32 KiB blocks of chunks, each a 7-byte header: CRC-32, length, type FULL/FIRST/MIDDLE/LAST),
every record one ``wandb_internal_pb2.Record`` protobuf, parsed here with wandb's own
message classes. Only history records are kept: ``{step: {key: value}}``.
"""

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every record of the file, in order (a chunk whose CRC fails raises ``ValueError``)."""
    data = path.read_bytes()
    ident, magic, version = HEADER.unpack_from(data)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path} is not a W&B log (header {ident!r} {magic:#x} {version})")
    pos, parts, out = HEADER.size, b"", []
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # the block's tail is padding
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        body = data[pos + CHUNK.size : pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if zlib.crc32(bytes([kind]) + body) != crc:
            raise ValueError(f"{path}: bad CRC at byte {pos}")
        parts = body if kind in (FULL, FIRST) else parts + body
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(parts)
            out.append(record)
    return out


def finished(path: Path, timeout_s: float = 30.0) -> list[Any]:
    """The records once the run's ``exit`` record is in the file: ``wandb.finish()`` can
    return before wandb's service has written the last records (a read right after it
    once missed the final history row). Bounded: ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = records(path)
        except (ValueError, struct.error):  # a chunk half written
            found = []
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout_s} s")
        time.sleep(0.1)


def value(item: Any) -> Any:
    """A history item's value, whichever of its typed fields is set."""
    kind = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if kind is not None and kind != "none":
        return getattr(item, kind)
    return json.loads(item.value_json) if item.value_json else None


def history(path: Path) -> dict[int, dict[str, Any]]:
    """``{step: {key: value}}`` of the finished run's history records (``_step`` the step)."""
    rows: dict[int, dict[str, Any]] = {}
    for record in finished(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {(item.key or "/".join(item.nested_key)): value(item) for item in record.history.item}
        rows.setdefault(int(row.get("_step", record.history.step.num)), {}).update(row)
    return rows
