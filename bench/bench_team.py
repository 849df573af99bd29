"""A team at work: annotators submitting while the lead imports and pulls, on SQLite and on PostgreSQL.

    python bench/bench_team.py [--annotators 8] [--tasks 5000] [--backends sqlite,postgresql]

For each database, against a real Label Studio started by the toolkit:
1. quiet: `sdg annotate push` of TASKS tasks into an empty project, then `pull`, nobody else on the server;
2. busy: the same push and pull into a project that ANNOTATORS people are working through at the same time, each
   in their own logged-in session through the label stream (the editor's requests: GET next, POST the annotation
   in the editor's structure). Half work at a human pace (2-6 s per task), half as fast as the server answers.
Reported: push and pull time busy / quiet (the baseline, same run), what the annotators saw (errors by kind,
latency p50 / p95), and the audit after everyone stops: annotations the annotators were told were saved but are not
in the export (lost), annotations in the export nobody was told about (phantom), the same person twice on a task
(duplicated), and image ids imported more than once. PostgreSQL must show none of the last four.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotation import server  # noqa: E402
from annotation.client import Connection, ensure_project  # noqa: E402
from annotation.config import AnnotateConfig  # noqa: E402
from annotation.pull import export_tasks, pull  # noqa: E402
from annotation.push import push, server_tasks, task_count  # noqa: E402
from annotation.testkit import Annotator, free_port, invite_link, join  # noqa: E402


TOKEN = "sdg-bench-token-0123456789abcdef01234567"
ADMIN = {"LABEL_STUDIO_USERNAME": "bench@sdg.test", "LABEL_STUDIO_PASSWORD": "bench-password-1"}


def write_samples(images: Path, tag: str, n: int, png: bytes) -> Path:
    (images / tag).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        (images / tag / f"{i}.png").write_bytes(png)
        lines.append({"image_id": f"{tag}-{i:05d}", "image_path": f"{tag}/{i}.png", "caption": f"prompt {i}",
                      "generator": "FLUX.2-dev", "seed": i, "split": "train", "defects": []})  # fmt: skip
    path = images / f"{tag}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def audit(conn: Connection, project_id: int, people: list[Annotator]) -> dict:
    """Compare what the annotators were told with what the server exports."""
    from annotation.pull import users_map

    tasks = export_tasks(conn, project_id)
    users = users_map(conn)
    told = {aid: (p.email, tid) for p in people for tid, aid in p.submitted}
    exported: dict[int, tuple[str, int]] = {}
    for t in tasks:
        for a in t.get("annotations") or []:
            who = a.get("completed_by")
            who = users.get(who, str(who)) if isinstance(who, int) else (who or {}).get("email")
            exported[a["id"]] = (who, t["id"])
    per_person_task = Counter(exported.values())
    n_tasks = task_count(conn, project_id)
    return {
        "told_saved": len(told),
        "lost": sum(aid not in exported for aid in told),
        "phantom": sum(aid not in told for aid in exported),
        "duplicated": sum(n - 1 for n in per_person_task.values() if n > 1),
        "duplicate_image_ids": n_tasks - len(server_tasks(conn, project_id)),
        "tasks": n_tasks,
    }


def run_backend(database: str, args, root: Path) -> dict:
    from PIL import Image

    images = root / database / "images"
    images.mkdir(parents=True)
    png_path = root / "one.png"
    Image.new("RGB", (64, 64), (90, 30, 30)).save(png_path)
    png = png_path.read_bytes()
    quiet_samples = write_samples(images, "quiet", args.tasks, png)
    seed_samples = write_samples(images, "seed", args.seed_tasks, png)
    busy_samples = write_samples(images, "busy", args.tasks, png)

    port = free_port()
    cfg = AnnotateConfig(url=f"http://127.0.0.1:{port}", port=port, data_dir=str(root / database / "data"),
                         image_root=str(images), project_title="team-quiet")  # fmt: skip
    env = {**os.environ, **ADMIN}
    os.environ["LABEL_STUDIO_API_KEY"] = TOKEN
    pg = None
    t0 = time.perf_counter()
    if database == "postgresql":
        from annotation.postgres import LocalPostgres

        pg = LocalPostgres(root / database / "pg", free_port())
        proc = server.start_on_postgres(cfg, TOKEN, pg, server.default_cache(TOKEN, "postgresql"), env=env)
    else:
        proc = server.start_from_cache(cfg, TOKEN, server.default_cache(TOKEN), env=env)
    print(f"[{database}] server up in {time.perf_counter() - t0:.1f} s", flush=True)
    out: dict = {"database": database}
    try:
        conn = Connection(cfg)
        ensure_project(conn)
        out["quiet_push_s"], s = timed(lambda: push(quiet_samples, conn, root))
        assert s["created"] == args.tasks, s
        out["quiet_pull_s"], _ = timed(lambda: pull(conn, root / f"{database}-quiet.jsonl"))
        print(f"[{database}] quiet: push {out['quiet_push_s']:.1f} s, pull {out['quiet_pull_s']:.1f} s", flush=True)

        conn.cfg.project_title = "team-busy"
        project, _ = ensure_project(conn)
        push(seed_samples, conn, root)
        link = invite_link(cfg.url, TOKEN)
        people = []
        for i in range(args.annotators):
            human = i % 2 == 0
            session = join(cfg.url, link, f"annotator{i}@sdg.test", "Annotator-password-1", timeout=120)
            people.append(Annotator(f"annotator{i}@sdg.test", session, project.id,
                                    think_s=(2.0, 6.0) if human else (0.0, 0.0), seed=i))  # fmt: skip
        stop = threading.Event()
        threads = [threading.Thread(target=p.work, args=(stop,), daemon=True) for p in people]
        for t in threads:
            t.start()
        time.sleep(args.warmup_s)
        out["busy_push_s"], s = timed(lambda: push(busy_samples, conn, root))
        assert s["created"] == args.tasks, s
        out["busy_pull_s"], _ = timed(lambda: pull(conn, root / f"{database}-busy.jsonl"))
        time.sleep(args.after_s)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        errors = Counter(e[:70] for p in people for e in p.errors)
        log = (Path(cfg.data_dir) / "server.log").read_text(errors="replace")
        out["log_database_locked"] = log.count("database is locked")
        out["log_server_errors"] = log.count("Internal Server Error")
        lat = sorted(x for p in people for x in p.latencies)
        out.update(
            annotators=args.annotators,
            submitted=sum(len(p.submitted) for p in people),
            annotator_errors=sum(errors.values()),
            error_kinds=dict(errors.most_common(5)),
            latency_p50_s=statistics.median(lat) if lat else None,
            latency_p95_s=lat[int(0.95 * (len(lat) - 1))] if lat else None,
            **audit(conn, project.id, people),
        )
        per = defaultdict(int)
        for p in people:
            per["human" if p.think_s[1] else "fast"] += len(p.submitted)
        out["submitted_by_pace"] = dict(per)
    finally:
        server.stop(proc.pid)
        proc.wait(timeout=60)
        if pg is not None:
            pg.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotators", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--seed-tasks", type=int, default=400, help="tasks the annotators start on")
    ap.add_argument("--warmup-s", type=float, default=5.0)
    ap.add_argument("--after-s", type=float, default=5.0)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-team-") as tmp:
        for database in args.backends.split(","):
            results.append(run_backend(database, args, Path(tmp)))
    print(f"\n{args.annotators} annotators (half at 2-6 s per task, half flat out), push of {args.tasks} tasks, pull")
    head = (f"{'database':<11} {'push busy/quiet':>16} {'pull busy/quiet':>16} {'submitted':>9} {'errors':>6} "
            f"{'p50 s':>6} {'p95 s':>6} {'lost':>4} {'phantom':>7} {'dup':>3} {'dup ids':>7}")  # fmt: skip
    print(head)
    for r in results:
        push_r = f"{r['busy_push_s']:.1f}/{r['quiet_push_s']:.1f}={r['busy_push_s'] / r['quiet_push_s']:.2f}x"
        pull_r = f"{r['busy_pull_s']:.1f}/{r['quiet_pull_s']:.1f}={r['busy_pull_s'] / r['quiet_pull_s']:.2f}x"
        print(f"{r['database']:<11} {push_r:>16} {pull_r:>16} {r['submitted']:>9} {r['annotator_errors']:>6} "
              f"{r['latency_p50_s']:>6.2f} {r['latency_p95_s']:>6.2f} {r['lost']:>4} {r['phantom']:>7} "
              f"{r['duplicated']:>3} {r['duplicate_image_ids']:>7}")  # fmt: skip
    for r in results:
        print(f"{r['database']}: errors by kind {r['error_kinds'] or '{}'}; by pace {r['submitted_by_pace']}; "
              f"server log: {r['log_server_errors']} internal errors, "
              f"{r['log_database_locked']} 'database is locked'")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
