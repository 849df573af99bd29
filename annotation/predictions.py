"""The project's predictions as plain API calls, for predict (the prefill) and the queue (annotation.queue):
listed in one request, imported in checked chunks, changed one request each with four in flight."""

from __future__ import annotations

from typing import Any

from annotation.client import AnnotateError, Connection


QUEUE_SUFFIX = "+queue"  # the model version of the queue's place holders (annotation.queue), after the prefill's


def canonical(result: Any) -> bytes:
    import orjson

    return orjson.dumps(result, option=orjson.OPT_SORT_KEYS)


def project_predictions(conn: Connection, project_id: int, model_version: str) -> dict[int, list[Any]]:
    """task id -> this model version's predictions on it (oldest first), read in one listing."""
    body = conn.get_json("list predictions", "api/predictions/", {"project": project_id})
    rows = body.get("results", []) if isinstance(body, dict) else body
    out: dict[int, list[Any]] = {}
    for p in sorted(rows, key=lambda p: p.get("id") or 0):
        if p.get("model_version") == model_version and isinstance(p.get("task"), int):
            out.setdefault(p["task"], []).append(p)
    return out


def import_new(conn: Connection, project_id: int, create: list[dict]) -> int:
    """Import the new predictions in chunks; each chunk's count is checked against what the server created."""
    created = 0
    for i in range(0, len(create), conn.cfg.chunk_size):
        chunk = create[i : i + conn.cfg.chunk_size]
        resp = conn.call(
            "import predictions",
            lambda chunk=chunk: conn.client.projects.import_predictions(id=project_id, request=chunk),
        )
        got = getattr(resp, "created", None)
        if got != len(chunk):
            raise AnnotateError(f"import predictions: sent {len(chunk)}, the server created {got}")
        created += got
    return created


def each(conn: Connection, what: str, items: list[tuple[int, Any]], fn) -> None:
    """One request per item, four in flight (a rerun over 30K tasks replaces in minutes, not tens of minutes)."""
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in [pool.submit(conn.call, what, lambda pid=pid, item=item: fn(pid, item)) for pid, item in items]:
            f.result()
