"""Prediction shards: the manifest's files grouped into jobs of about `files_per_job` files.

Boundaries are content-defined (`assign_shards`), so a new file changes only its own shard
and a re-run tags only the new files' shards. (Re-tagging within one shard is
`maggotflow.shards`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

from maggotflow.names import text_sha1

if TYPE_CHECKING:
    from maggotflow.manifest import Manifest


def run_shards(found: Manifest, files_per_job: int, max_mb: float | None = None) -> dict[str, list[str]]:
    """The prediction shards of a manifest's files (`assign_shards`, sized by the files' bytes)."""
    return assign_shards(found.ids, files_per_job, sizes={r["id"]: int(r["size"] or 0) for r in found},
                         max_bytes=None if max_mb is None else int(max_mb * 1e6))


def assign_shards(ids: Sequence[str], files_per_job: int, sizes: Mapping[str, int] | None = None,
                  max_bytes: int | None = None) -> dict[str, list[str]]:
    """Group ids (in sorted order) into prediction shards of about `files_per_job` files.

    Shard boundaries are content-defined: a shard ends after an id whose hash is 0 modulo
    `files_per_job` (or when it reaches twice that size). Adding a file to a large tree
    therefore changes only the shard it falls into instead of shifting every later shard,
    so re-running after new experiments arrive tags only the new files' shards. With
    `sizes` (bytes per id) and `max_bytes`, a shard also ends once its files reach
    `max_bytes`, so that a job of large files stays short (a file larger than that gets a
    shard of its own); the effect of a change still stops at the next hash boundary.
    Shards are named by a hash of their first id: `{name: [ids]}` in order.
    """
    if files_per_job < 1:
        raise ValueError(f"files_per_job must be >= 1, got {files_per_job}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    shards: dict[str, list[str]] = {}
    current: list[str] = []
    total = 0

    def close() -> None:
        nonlocal total
        name = "s" + text_sha1(current[0])[:10]
        while name in shards:  # hash collision of two first ids: astronomically rare
            name += "x"
        shards[name] = list(current)
        current.clear()
        total = 0

    for ident in sorted(ids):
        current.append(ident)
        if sizes is not None:
            total += int(sizes.get(ident, 0))
        if (int(text_sha1(ident)[:8], 16) % files_per_job == 0 or len(current) >= 2 * files_per_job
                or (max_bytes is not None and total >= max_bytes)):
            close()
    if current:
        close()
    return shards
