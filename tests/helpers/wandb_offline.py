"""Read what an offline wandb run wrote (`wandb/offline-run-*/run-<id>.wandb`): the run's
group, tags and config, straight from the file wandb would sync, no mock in between.

The file is wandb's log format: a 7-byte header (`:W&B`, magic, version), then 32 KiB blocks
of chunks, each `crc32 (4) | length (2, little endian) | type (1: full, 2: first, 3: middle,
4: last)` + payload; a record is one protobuf `Record` split over one or more chunks.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
CHUNK_HEADER = 7


def read_records(path: Path) -> list[Any]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    pos, payloads, pending = 7, [], b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # block tail too short for a chunk header: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            payloads.append(pending + chunk)
    records = []
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


@dataclass
class OfflineRun:
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: set[str] = field(default_factory=set)


def read_offline_run(run_dir: Path) -> OfflineRun:
    """The run under `run_dir/wandb/offline-run-*` (exactly one)."""
    (path,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    run = OfflineRun()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            # a run record may come again later with only some fields set: keep what is set
            run.group = record.run.run_group or run.group
            run.job_type = record.run.job_type or run.job_type
            run.tags = list(record.run.tags) or run.tags
            updates = record.run.config.update
        elif kind == "config":
            updates = record.config.update
        elif kind == "history":
            run.metrics.update(
                item.key or "/".join(item.nested_key) for item in record.history.item
            )
            continue
        else:
            continue
        for item in updates:
            run.config[item.key] = json.loads(item.value_json)
    return run
