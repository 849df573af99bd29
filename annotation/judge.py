"""Blind A/B judging of edited images in Label Studio (the paper's Good / Same / Bad comparison of refinement).

``judge-init`` makes a pairwise project: the two images side by side in a random order recorded per task (in the
task's ``meta``, which annotators do not see), the caption, and one choice, "Left is better", "About the same" or
"Right is better", plus an optional comment. ``judge-push`` makes a task per pair from two ``sdg refine``
manifests (joined by the source image), or from a manifest and the records of its sources. ``judge-pull``
un-blinds each judgment with the recorded order, writes one line per judgment (``good`` / ``same`` / ``bad`` for
method A against method B), and tallies each method pair: the shares with 95% Wilson intervals, and the agreement
of annotators who judged the same pairs (raw agreement and Cohen's kappa).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotation.client import (
    AnnotateError,
    Connection,
    all_pages,
    ensure_storage,
    project_image_root,
    require_image_root,
)
from annotation.labeling import guidelines_html
from sdg_data.io.files import write_json, write_jsonl
from sdg_data.io.jsonl import iter_jsonl
from sdg_data.io.report import StageReport
from sdg_data.records import Reject, is_id


JUDGE_VERSION = "sdg-judge/1"
JUDGE_TAG = f"[{JUDGE_VERSION}]"
GUIDELINES = Path(__file__).parent / "judge_guidelines.md"
LEFT, SAME, RIGHT = "Left is better", "About the same", "Right is better"
JUDGE_CONFIG = f"""<View>
  <Header value="Prompt" size="5"/>
  <Text name="caption" value="$caption"/>
  <View style="display: flex; gap: 12px; align-items: flex-start;">
    <View style="flex: 1; min-width: 0;"><Header value="Left" size="6"/>
      <Image name="left" value="$left" maxWidth="100%" zoom="true"/></View>
    <View style="flex: 1; min-width: 0;"><Header value="Right" size="6"/>
      <Image name="right" value="$right" maxWidth="100%" zoom="true"/></View>
  </View>
  <Header value="Which image is better?" size="5"/>
  <Choices name="verdict" toName="left" choice="single" required="true" showInline="true">
    <Choice value="{LEFT}" hotkey="1"/>
    <Choice value="{SAME}" hotkey="2"/>
    <Choice value="{RIGHT}" hotkey="3"/>
  </Choices>
  <TextArea name="comment" toName="left" rows="2" placeholder="Optional comment" maxSubmissions="1"/>
</View>
"""


# ------------------------------------------------------------------ project
def find_judge_project(conn: Connection, title: str) -> Any | None:
    projects = conn.call("list projects", lambda: all_pages(conn.client.projects.list(title=title, page_size=100)))
    mine = [p for p in projects if p.title == title and JUDGE_TAG in (p.description or "")]
    return mine[0] if mine else None


def ensure_judge_project(conn: Connection) -> tuple[Any, bool]:
    """Create the judging project or bring it to the config; idempotent. Returns (project, created)."""
    title = conn.cfg.judge_title
    fields = {
        "title": title,
        "description": f"Blind pairwise comparison: which image is better? {JUDGE_TAG}",
        "label_config": JUDGE_CONFIG,
        "expert_instruction": guidelines_html(GUIDELINES),
        "show_instruction": True,
        "show_skip_button": True,
    }
    existing = find_judge_project(conn, title)
    if conn.cfg.overlap is not None or existing is None:  # unset: a rerun keeps the project's overlap
        fields["maximum_annotations"] = conn.cfg.overlap or 1
    if existing is None:
        project, created = conn.call("create project", lambda: conn.client.projects.create(**fields)), True
    else:
        project = conn.call("update project", lambda: conn.client.projects.update(id=existing.id, **fields))
        created = False
    if conn.cfg.image_root is None:
        project_image_root(conn, project)
    if conn.cfg.image_root is None:
        raise AnnotateError("no image root: start the server with sdg annotate serve --image-root DIR, or give one")
    ensure_storage(conn, project.id)
    return project, created


# ------------------------------------------------------------------ pairs
@dataclass
class Side:
    method: str
    image_id: str
    path: Path
    caption: str


def _manifest(path: Path, name: str | None) -> tuple[str, dict[str, Side]]:
    """source image id -> its image in a refine manifest, or (for plain records) image id -> the image itself."""
    sides: dict[str, Side] = {}
    method = name
    for _, row in iter_jsonl(path):
        prov = row.get("provenance") or {}
        key = prov.get("source_image_id") or row["image_id"]
        method = method or (f"{prov['mode']}" if prov.get("stage") == "refine" else path.stem)
        sides[key] = Side(method or path.stem, row["image_id"], (path.parent / row["image_path"]).resolve(),
                          row.get("caption") or "")  # fmt: skip
    return method or path.stem, sides


def pair_id(a: Side, b: Side) -> str:
    return hashlib.sha256(f"{a.method}|{a.image_id}|{b.method}|{b.image_id}".encode()).hexdigest()[:16]


def judge_push(
    conn: Connection, a_path: Path, b_path: Path, out_dir: Path, a_name: str | None = None, b_name: str | None = None
) -> dict[str, Any]:
    """A task per pair (same source image in both files), idempotent by pair id; returns the summary. Method names
    default to each manifest's refine mode (plain records: the file's name)."""
    from annotation.push import image_url, resolve_inside, server_tasks
    from annotation.server import document_root
    from sdg_data.io.report import StageReport

    title = conn.cfg.judge_title
    project = find_judge_project(conn, title)
    if project is None:
        raise AnnotateError(f"no judging project {title!r}; run sdg annotate judge-init first")
    a_method, a_sides = _manifest(Path(a_path), a_name)
    b_method, b_sides = _manifest(Path(b_path), b_name)
    if a_method == b_method:
        raise AnnotateError(f"both files are method {a_method!r}; name them with --a-name / --b-name")
    root = require_image_root(conn, project)
    doc_root = document_root(conn.cfg)
    existing = set(server_tasks(conn, project.id, key="pair_id"))
    report = StageReport("judge-push", read=len(a_sides))
    tasks = []
    for key, a in a_sides.items():
        b = b_sides.get(key)
        if b is None:
            report.reject(f"no image of source {key!r} in {b_path}", key, str(a_path), None)
            continue
        try:
            urls = {s.method: image_url(os.path.relpath(resolve_inside(str(s.path), Path("/"), root), doc_root))
                    for s in (a, b)}  # fmt: skip
        except (ValueError, FileNotFoundError) as exc:
            report.reject(str(exc), key, str(a_path), None)
            continue
        pid = pair_id(a, b)
        report.kept += 1
        if pid in existing:
            continue
        order = "ab" if random.Random(f"{conn.cfg.judge_seed}:{pid}").random() < 0.5 else "ba"
        left, right = (a, b) if order == "ab" else (b, a)
        tasks.append({
            "data": {"left": urls[left.method], "right": urls[right.method], "caption": a.caption or b.caption,
                     "pair_id": pid},
            "meta": {"judge": JUDGE_VERSION, "order": order, "a_method": a.method, "b_method": b.method,
                     "a_image_id": a.image_id, "b_image_id": b.image_id, "source_image_id": key},
        })  # fmt: skip
    for start in range(0, len(tasks), conn.cfg.chunk_size):
        chunk = tasks[start : start + conn.cfg.chunk_size]
        conn.call("import tasks", lambda chunk=chunk: conn.client.projects.import_tasks(id=project.id, request=chunk))
    report.extras = {"project": project.id, "created": len(tasks), "a_method": a_method, "b_method": b_method}
    return report.write(Path(out_dir), prefix="judge.")


# ------------------------------------------------------------------ pull and tally
def _verdict(ann: dict[str, Any]) -> tuple[str | None, str]:
    """The annotation's choice and comment; ValueError naming the field when a result is not the labeling
    config's shape (a hand-edited export, another tool's)."""
    choice, comment = None, ""
    results = ann.get("result") or []
    if not isinstance(results, list):
        raise ValueError(f"field 'result': must be a list, got {type(results).__name__}")
    for k, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("value") or {}, dict):
            raise ValueError(f"field 'result[{k}]': must be an object with an object 'value'")
        value = r.get("value") or {}
        if r.get("from_name") == "verdict":
            got = value.get("choices") or []
            if not isinstance(got, list) or len(got) > 1:
                raise ValueError(f"field 'result[{k}].value.choices': must be a list of one choice, got {got!r:.60}")
            choice = got[0] if got else None
        elif r.get("from_name") == "comment":
            text = value.get("text") or []
            text = text if isinstance(text, list) else [text]
            if not all(isinstance(t, str) for t in text):
                raise ValueError(f"field 'result[{k}].value.text': must be text, got {text!r:.60}")
            comment = " ".join(text)
    return choice, comment


def unblind(choice: str, order: str) -> str:
    """The judgment for method A against method B: good (A better), same, bad (A worse)."""
    if choice == SAME:
        return "same"
    a_left = order == "ab"
    return "good" if (choice == LEFT) == a_left else "bad"


def _who(ann: dict[str, Any], users: dict[int, str]) -> str:
    who = ann.get("completed_by")
    key = who.get("id") if isinstance(who, dict) else who
    if isinstance(key, int) and not isinstance(key, bool):
        return users.get(key, f"user-{key}")
    return who.get("email") if isinstance(who, dict) and isinstance(who.get("email"), str) else str(key)


_META = ("a_method", "b_method", "a_image_id", "b_image_id")


def judgments(tasks: list[Any], users: dict[int, str]) -> tuple[list[dict], list[Reject]]:
    """One row per verdict, un-blinded; every task or annotation that cannot be read is a reject naming the task,
    the annotation and the field (one bad entry never stops the pull)."""
    rows, rejects = [], []
    for n, t in enumerate(tasks):
        if not isinstance(t, dict):
            rejects.append(Reject(f"not a task object ({type(t).__name__})", "judge", None, f"tasks[{n}]", None, t))
            continue
        tid = t.get("id") if is_id(t.get("id")) else None
        meta, data = t.get("meta"), t.get("data")
        if not isinstance(meta, dict) or meta.get("judge") != JUDGE_VERSION or meta.get("order") not in ("ab", "ba"):
            why = "task has no recorded order (not pushed by judge-push)"
            rejects.append(Reject(why, "judge", None, f"task {tid}: tasks[{n}].meta", None, meta))
            continue
        bad = [k for k in _META if not isinstance(meta.get(k), str)]
        if bad or not isinstance(data, dict) or not isinstance(data.get("pair_id"), str):
            field = f"meta.{bad[0]}" if bad else "data.pair_id"
            why = f"field {field!r}: missing or not text (the task was edited after judge-push)"
            rejects.append(Reject(why, "judge", None, f"task {tid}: tasks[{n}].{field}", None, t))
            continue
        anns = t.get("annotations") or []
        for k, ann in enumerate(anns if isinstance(anns, list) else [anns]):
            where = f"tasks[{n}].annotations[{k}]"
            if not isinstance(ann, dict):
                why = "not an annotation object"
                rejects.append(Reject(why, "judge", data["pair_id"], f"task {tid}: {where}", None, ann))
                continue
            if ann.get("was_cancelled") is True:
                continue
            who = _who(ann, users)
            try:
                choice, comment = _verdict(ann)
            except ValueError as exc:
                rejects.append(Reject(str(exc), "judge", data["pair_id"], f"task {tid}: {where} by {who}", None, ann))
                continue
            if choice not in (LEFT, SAME, RIGHT):
                why = f"no verdict ({choice!r:.60})"
                rejects.append(Reject(why, "judge", data["pair_id"], f"task {tid}: {where} by {who}", None, ann))
                continue
            rows.append({"pair_id": data.get("pair_id"), "task_id": tid, "annotator": who,
                         **{k: meta[k] for k in _META}, "order": meta["order"], "choice": choice,
                         "verdict": unblind(choice, meta["order"]), "comment": comment})  # fmt: skip
    return rows, rejects


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    if not pairs:
        return None
    n = len(pairs)
    po = sum(a == b for a, b in pairs) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def tally(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method pair: Good / Same / Bad counts and shares with 95% intervals, and annotator agreement."""
    out: dict[str, Any] = {}
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_pair[f"{r['a_method']} vs {r['b_method']}"].append(r)
    for name, rs in by_pair.items():
        n = len(rs)
        counts = Counter(r["verdict"] for r in rs)
        entry: dict[str, Any] = {"judgments": n, "pairs": len({r["pair_id"] for r in rs})}
        for v in ("good", "same", "bad"):
            lo, hi = wilson(counts[v], n)
            entry[v] = {"count": counts[v], "share": counts[v] / n if n else 0.0, "ci95": [lo, hi]}
        per_annotator: dict[str, dict[str, str]] = defaultdict(dict)
        for r in rs:
            per_annotator[r["annotator"]][r["pair_id"]] = r["verdict"]
        names = sorted(per_annotator)
        agree = {}
        for i, x in enumerate(names):
            for y in names[i + 1 :]:
                common = sorted(set(per_annotator[x]) & set(per_annotator[y]))
                both = [(per_annotator[x][p], per_annotator[y][p]) for p in common]
                if both:
                    agree[f"{x} ~ {y}"] = {"pairs": len(both), "agreement": sum(a == b for a, b in both) / len(both),
                                          "kappa": cohen_kappa(both)}  # fmt: skip
        entry["annotator_agreement"] = agree
        out[name] = entry
    return out


def format_tally(result: dict[str, Any]) -> str:
    lines = ["| A vs B | judgments | Good | Same | Bad |", "|---|---|---|---|---|"]
    for name, e in result.items():
        cells = [
            f"{e[v]['share']:.1%} [{e[v]['ci95'][0]:.1%}, {e[v]['ci95'][1]:.1%}]" for v in ("good", "same", "bad")
        ]
        lines.append(f"| {name} | {e['judgments']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def judge_pull(conn: Connection | None, out: Path, from_export: Path | None = None) -> dict[str, Any]:
    """Export the judging project (or read a JSON export downloaded from the UI), un-blind, write OUT (a line per
    judgment), OUT.tally.json and the rejects."""
    import orjson

    from annotation.pull import export_tasks, users_map

    if from_export is not None:
        try:
            tasks, users, project_id = orjson.loads(Path(from_export).read_bytes()), {}, None
        except orjson.JSONDecodeError as exc:
            raise AnnotateError(f"{from_export}: not valid JSON ({exc})") from None
        if not isinstance(tasks, list):
            raise AnnotateError(f"{from_export}: not a Label Studio JSON export (a list of tasks)")
    else:
        assert conn is not None
        project = find_judge_project(conn, conn.cfg.judge_title)
        if project is None:
            raise AnnotateError(f"no judging project {conn.cfg.judge_title!r} on {conn.cfg.url}")
        tasks, users, project_id = export_tasks(conn, project.id), users_map(conn), project.id
    rows, rejects = judgments(tasks, users)
    out = Path(out)
    write_jsonl(out, rows)
    report = StageReport("judge", read=len(rows) + len(rejects), kept=len(rows))  # a unit: one verdict
    report.add(rejects)
    report.write(out.parent, prefix=f"{out.stem}.")  # OUT-STEM.judge.rejects.jsonl and .judge.summary.json
    result = {"tally": tally(rows), "judgments": len(rows), "rejected": len(rejects), "project": project_id}
    write_json(out.with_suffix(".tally.json"), result)
    return result
