"""The order in which the server hands tasks out: the images a detector is least sure about first, gold tasks spread
through everyone's share.

Label Studio Community serves the next task by one of three samplings; its "Uncertainty sampling" takes the tasks
that hold a prediction of the project's current model version, lowest prediction score first (with several
annotators, at random among the lowest few, so two people do not open the same task at once). sdg writes one
prediction per task under ``<prefill version>+queue`` whose score is the task's place in the queue, and carries the
prefill's boxes over unchanged (the server shows one model version prefilled), then switches the project to that
sampling. Ordinary tasks come most uncertain first, then the rest in task order; a gold task comes after every
``spacing`` ordinary tasks, where ``spacing`` makes gold about ``gold_share`` of each annotator's tasks for a team of
``team`` annotators with the project's overlap. Places are consecutive (``k * PLACE``, the server keeping scores
in 0-1): a gold task's says nothing.

The priorities given last are kept in the work folder, so a later push or gold add places new tasks the same way
(new tasks without a priority go after the others).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from annotation.client import AnnotateError, Connection, require_project
from annotation.config import AnnotateConfig
from annotation.predictions import QUEUE_SUFFIX
from sdg_data.records import Defect, Reject


PLACE = 1e-7  # the score of one place: the server keeps scores in 0-1 (drops the rest); room for 10M tasks
UNCERTAINTY_SAMPLING = "Uncertainty sampling"


def priorities_path(cfg: AnnotateConfig) -> Path:
    from annotation.gold import project_slug

    return Path(cfg.work_dir) / "queue" / f"{project_slug(cfg)}.json"


def stored_priorities(cfg: AnnotateConfig) -> dict[str, float] | None:
    path = priorities_path(cfg)
    if not path.is_file():
        return None
    got = orjson.loads(path.read_bytes())
    return {str(k): float(v) for k, v in got.items()} if isinstance(got, dict) else None


def read_order(path: str | Path) -> tuple[dict[str, float], list[Reject], int]:
    """image_id -> uncertainty from ``sdg detect --samples K`` predictions (their ``uncertainty``, or computed from
    their ``samples``) or any JSONL with ``image_id`` and ``uncertainty``; rejects name the line and the field."""
    from sdg_data.io.jsonl import usable_lines
    from sdg_data.scoring.uncertainty import disagreement

    path = Path(path)
    out: dict[str, float] = {}
    first: dict[str, int] = {}
    rejects: list[Reject] = []
    bad: list[Reject] = []  # lines that are not JSON
    for lineno, obj in usable_lines(path, "order", bad):
        iid = obj.get("image_id") if isinstance(obj, dict) else None
        where = f"{path}:{lineno}"
        try:
            if not isinstance(obj, dict):
                raise ValueError(f"line: must be an object with image_id and uncertainty, got {type(obj).__name__}")
            if iid is None or iid == "":
                raise ValueError("image_id: missing")
            if not isinstance(iid, str):
                raise ValueError(f"image_id: must be text, got {type(iid).__name__}")
            if iid in first:
                raise ValueError(f"image_id: repeated in this file (first on line {first[iid]}, which is kept)")
            u = obj.get("uncertainty")
            if u is None and isinstance(obj.get("samples"), list):
                u = disagreement([_sample(iid, k, x) for k, x in enumerate(obj["samples"])])
            if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 <= u <= 1:
                raise ValueError(f"uncertainty: a number from 0 to 1 is needed (or samples), got {u!r}")
            out[iid] = float(u)
            first[iid] = lineno
        except (ValueError, TypeError) as exc:
            rejects.append(Reject(str(exc), "order", iid if isinstance(iid, str) else None, where, lineno, obj))
    return out, bad + rejects, len(out) + len(bad) + len(rejects)


def _sample(iid: str, k: int, sample: Any) -> list[Defect]:
    if not isinstance(sample, dict) or not isinstance(sample.get("defects") or [], list):
        raise ValueError(f"samples[{k}]: must be an object with a defects list")
    return [Defect.from_json(d, iid, f"samples[{k}].defects[{j}]") for j, d in enumerate(sample.get("defects") or [])]


def spacing(share: float, team: int, overlap: int) -> int:
    """Ordinary tasks between two gold tasks so that gold is ``share`` of each annotator's tasks: an annotator does
    ``overlap / team`` of the ordinary tasks and every gold task."""
    return max(1, round((1 - share) / share * team / max(1, min(overlap, team))))


def queue_places(
    tasks: Mapping[str, int], priorities: Mapping[str, float] | None, gold: set[str], every: int
) -> dict[int, float]:
    """task id -> its place (the prediction score; lowest first): consecutive numbers, so a gold task's place says
    nothing about it."""
    pri = priorities or {}
    ordinary = sorted((i for i in tasks if i not in gold), key=lambda i: (-pri.get(i, -1.0), tasks[i]))
    golds = sorted((i for i in tasks if i in gold), key=lambda i: tasks[i])
    merged: list[str] = []
    for k, i in enumerate(ordinary):
        merged.append(i)
        if (k + 1) % every == 0 and golds:
            merged.append(golds.pop(0))
    merged += golds  # more gold than slots: the rest at the end
    return {tasks[i]: k * PLACE for k, i in enumerate(merged)}


def _team(conn: Connection, cfg: AnnotateConfig) -> int:
    if cfg.team_size:
        return cfg.team_size
    users = conn.call("list users", lambda: list(conn.client.users.list()))
    return max(1, len(users) - 1)  # everyone but the lead whose key this is


def apply_queue(
    conn: Connection,
    priorities: Mapping[str, float] | None,
    gold: set[str],
    save: bool = False,
    tasks: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Write the queue's predictions and switch the project to uncertainty sampling (see the module docstring).
    Without priorities and gold, and no queue yet, nothing is done (the project keeps its sampling). ``tasks``
    (image_id -> task id) when the caller has just listed them: 30K take seconds to list."""
    from annotation.client import set_model_version
    from annotation.predictions import each, import_new, project_predictions
    from annotation.push import server_tasks

    cfg = conn.cfg
    project = require_project(conn)
    shown = getattr(project, "model_version", None) or ""
    if not priorities and not gold and not shown.endswith(QUEUE_SUFFIX):
        return {"applied": False}
    base = shown[: -len(QUEUE_SUFFIX)] if shown.endswith(QUEUE_SUFFIX) else shown
    version = f"{base or 'sdg'}{QUEUE_SUFFIX}"
    tasks = tasks if tasks is not None else server_tasks(conn, project.id)
    overlap = int(getattr(project, "maximum_annotations", 1) or 1)
    team = _team(conn, cfg)
    every = spacing(cfg.gold_share, team, overlap)
    places = queue_places(tasks, priorities, gold & set(tasks), every)
    prefill = project_predictions(conn, project.id, base) if base else {}
    have = project_predictions(conn, project.id, version)
    create, update = [], []
    for tid, place in places.items():
        result = (prefill.get(tid) or [{}])[0].get("result") or []
        mine = have.get(tid)
        if not mine:
            create.append({"task": tid, "model_version": version, "score": place, "result": result})
        elif mine[0].get("score") != place or mine[0].get("result") != result:
            update.append((mine[0]["id"], {"score": place, "result": result}))
    created = import_new(conn, project.id, create)
    each(conn, "move a task in the queue", update, lambda pid, body: conn.get_json(
        "update prediction", f"api/predictions/{pid}/", method="PATCH", json=body))  # fmt: skip
    if shown != version:
        set_model_version(conn, project, version)
    if getattr(project, "sampling", None) != UNCERTAINTY_SAMPLING:
        conn.call("set sampling", lambda: conn.client.projects.update(id=project.id, sampling=UNCERTAINTY_SAMPLING))
    if save and priorities is not None:
        from sdg_data.io.files import write_bytes

        write_bytes(priorities_path(cfg), orjson.dumps(dict(priorities)))
    gold_here = [tasks[i] for i in gold if i in tasks]
    return {
        "applied": True,
        "model_version": version,
        "prefill_from": base or None,
        "tasks": len(places),
        "prioritised": sum(1 for i in tasks if i in (priorities or {})),
        "gold": len(gold_here),
        "gold_every": every,
        "team": team,
        "created": created,
        "moved": len(update),
    }


def order_queue(conn: Connection, order_file: str | Path) -> dict[str, Any]:
    """``push --order``: read the priorities, keep them, and apply them with the project's gold; the order file's
    unusable lines go to ``<stem>.order.rejects.jsonl`` in the work folder."""
    from annotation.gold import read_gold
    from annotation.push import server_tasks
    from sdg_data.io.report import StageReport

    order_file = Path(order_file)
    pri, rejects, n = read_order(order_file)
    tasks = server_tasks(conn, require_project(conn).id)
    for iid in [i for i in pri if i not in tasks]:
        rejects.append(Reject("no task with this image_id in the project", "order", iid, str(order_file)))
        del pri[iid]
    if not pri:
        raise AnnotateError(f"{order_file}: no usable line ({len(rejects)} rejected): nothing to order by")
    report = StageReport("order", read=n, kept=len(pri))
    report.add(rejects)
    report.extras = apply_queue(conn, pri, set(read_gold(conn.cfg)), save=True, tasks=tasks)
    return report.write(Path(conn.cfg.work_dir), prefix=f"{order_file.stem}.")


def keep_queue(conn: Connection, tasks: Mapping[str, int] | None = None) -> dict[str, Any]:
    """After a push, a gold add or a new prefill: place new tasks, carry the prefill shown now into the queue's
    predictions, with the priorities kept in the work folder and the project's gold (nothing when it has neither and
    no queue yet)."""
    from annotation.gold import read_gold

    return apply_queue(conn, stored_priorities(conn.cfg), set(read_gold(conn.cfg)), tasks=tasks)


def add_gold(conn: Any, records_path: str | Path, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Keep GOLD.jsonl's annotated records in the gold store, push their images as ordinary tasks, raise those
    tasks' overlap so every annotator gets them, and spread them through the queue."""
    from annotation.gold import GOLD_OVERLAP, gold_path, raise_overlap, read_gold, telltale
    from annotation.push import push, server_tasks
    from sdg_data.io.files import write_bytes
    from sdg_data.io.report import StageReport
    from sdg_data.io.truth import load_ground_truth

    cfg = conn.cfg
    project = require_project(conn)
    src = Path(records_path)
    truth = load_ground_truth(src, stage="gold")  # only annotated records: a gold task needs its reference
    refused = {r.image_id: why for r in truth.records if (why := telltale(r))}
    if refused:
        first = next(iter(refused.items()))
        raise ValueError(
            f"{src}: {len(refused)} gold record(s) would give themselves away, e.g. {first[0]}: {first[1]}"
        )
    keep = truth.records
    work = Path(out_dir or cfg.work_dir)
    # the images' paths made absolute, so the tasks pushed from the work folder point where GOLD.jsonl's do; no
    # reference boxes in this copy (the gold store holds them)
    rows = []
    for r in keep:
        obj = {**r.to_json(), "defects": []}
        if r.image_path and not Path(r.image_path).is_absolute():
            obj["image_path"] = str((src.parent / r.image_path).resolve())
        rows.append(obj)
    staged = work / "gold-push.jsonl"
    write_bytes(staged, b"".join(orjson.dumps(o) + b"\n" for o in rows))
    pushed = push(staged, conn, work)
    tasks = server_tasks(conn, project.id)
    store = read_gold(cfg)
    for r in keep:
        if r.image_id in tasks:
            store[r.image_id] = r
    write_bytes(gold_path(cfg), b"".join(orjson.dumps(r.to_json()) + b"\n" for r in store.values()))
    raised = raise_overlap(conn, [tasks[i] for i in store if i in tasks], GOLD_OVERLAP)
    queue = apply_queue(conn, stored_priorities(cfg), set(store), tasks=tasks)
    added = sum(r.image_id in tasks for r in keep)
    # every line of GOLD.jsonl is kept or a reject: not annotated (here), or refused by push (its own report)
    report = StageReport("gold", read=len(keep) + len(truth.rejects), kept=added)
    report.add(truth.rejects)
    for r in keep:
        if r.image_id not in tasks:
            report.reject("not pushed (see gold-push.push.rejects.jsonl)", r.image_id, str(src))
    report.extras = {
        "gold_added": added,
        "gold_in_store": len(store),
        "store": str(gold_path(cfg)),
        "push": {k: pushed.get(k) for k in ("read", "kept", "rejected")},
        "overlap_raised": raised,
        "queue": queue,
    }
    return report.write(work, prefix=f"{src.stem}.")
