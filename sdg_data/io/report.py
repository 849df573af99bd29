"""One way for every stage to drop a record and to count: a :class:`StageReport`.

Every stage writes ``<stage>.rejects.jsonl`` (one :class:`~sdg_data.records.Reject` per dropped input, made where
the input was screened: image id, stage, reason, where it came from, line, the record as read; the same keys in
every file) and ``<stage>.summary.json`` (read, kept, rejected, and the stage's own figures) the same
way, checks that read = kept + rejected (+ left out on purpose) before it writes, and masks keys on the way out.
``sdg stats`` reads these files from a dataset's ``meta/`` folder, whatever stage wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdg_data.records import Reject


REJECTS_SUFFIX = ".rejects.jsonl"
SUMMARY_SUFFIX = ".summary.json"
FAILED_RUN = "failed-run"  # where a run that kept nothing writes its reports, beside the outputs it left alone


@dataclass
class StageReport:
    """What one run of a stage read, kept and dropped (with why), plus the stage's own figures in ``extras``."""

    stage: str
    read: int = 0
    kept: int = 0
    left_out: int = 0  # usable inputs left out on purpose (a --limit), neither kept nor rejected
    rejects: list[Reject] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def reject(
        self,
        reason: str,
        image_id: Any = None,
        where: str | None = None,
        record: Any = None,
        stage: str | None = None,
        line: int | None = None,
    ) -> None:
        """Drop one input with its reason. ``stage`` names a sub-step (a distill record can fail at input, image,
        teacher or transport)."""
        self.rejects.append(Reject(reason, stage or self.stage, image_id, where, line, record))

    def add(self, rejects: list[Reject]) -> None:
        """Drop inputs already screened out elsewhere (a reader, an image check), as they were made."""
        self.rejects.extend(rejects)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def failed(self) -> bool:
        """Read input and kept none of it: such a run must not replace a good earlier output with nothing. Its
        stage writes no outputs, and :meth:`write` puts its reports in ``FOLDER/failed-run/``."""
        return bool(self.read and not self.kept and self.rejected)

    def by_stage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejects:
            out[r.stage] = out.get(r.stage, 0) + 1
        return out

    def reconcile(self) -> None:
        """read = kept + rejected + left out, or an AssertionError: a count that does not add up is our bug."""
        if self.read != self.kept + self.rejected + self.left_out:
            raise AssertionError(
                f"{self.stage}: counts do not reconcile: read {self.read} != kept {self.kept} + rejected "
                f"{self.rejected} + left out {self.left_out}"
            )

    def summary(self) -> dict[str, Any]:
        out = {"stage": self.stage, "read": self.read, "kept": self.kept, "rejected": self.rejected}
        if self.left_out:
            out["left_out"] = self.left_out
        return {**out, **self.extras}

    def paths(self, folder: str | Path, prefix: str = "") -> tuple[Path, Path]:
        folder = Path(folder)
        return folder / f"{prefix}{self.stage}{REJECTS_SUFFIX}", folder / f"{prefix}{self.stage}{SUMMARY_SUFFIX}"

    def write(self, folder: str | Path, prefix: str = "") -> dict[str, Any]:
        """Reconcile, then write ``{prefix}{stage}.rejects.jsonl`` and ``{prefix}{stage}.summary.json`` in
        ``folder`` (a failed run where a good run's reports are: in ``folder/failed-run/``, so those stay with the
        outputs they describe; a good run clears a failed run's reports); returns the summary."""
        from sdg_data.io.files import output_root, remove_output, write_json, write_jsonl

        self.reconcile()
        folder = output_root(folder)  # nothing below it through a link: failed-run/ planted as one is refused
        if self.failed:
            if _kept_before(self.paths(folder, prefix)[1]):  # a good run's reports are there: leave them
                folder = failed_run_folder(folder)
        else:  # a good run clears every failed run's reports (failed-run/, failed-run-N/); links are left alone
            for place in [folder / FAILED_RUN, *sorted(folder.glob(f"{FAILED_RUN}-*"))]:
                if _real_folder(place):
                    for stale in self.paths(place, prefix):
                        remove_output(stale)
        rejects_path, summary_path = self.paths(folder, prefix)
        write_jsonl(rejects_path, (r.to_json() for r in self.rejects))
        summary = self.summary()
        if folder.name.startswith(FAILED_RUN):
            summary["failed_run"] = str(folder)
        write_json(summary_path, summary)
        return summary


def _real_folder(path: Path) -> bool:
    import os
    import stat

    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def failed_run_folder(folder: Path) -> Path:
    """Where a failed run's reports go: ``failed-run/``, or, when something that is not a real folder holds that
    name (a file, a link), the first free ``failed-run-N/``: the failed run's reports are never lost, and never
    written through a link."""
    import os

    for n in range(1000):
        cand = folder / (FAILED_RUN if n == 0 else f"{FAILED_RUN}-{n}")
        if _real_folder(cand) or not os.path.lexists(cand):
            return cand
    raise OSError(f"{folder}: no free place for a failed run's reports ({FAILED_RUN}-N up to 999 are taken)")


def _kept_before(summary_path: Path) -> bool:
    """Whether the summary already at this place is a run's that kept something."""
    from sdg_data.io.sidecar import read_json_object

    got = read_json_object(summary_path)  # a regular file only: a FIFO or a link there is no earlier run
    return bool(got and got.get("kept"))


def stage_files(folder: str | Path) -> dict[str, dict[str, Path]]:
    """The stage reports in a folder: ``{stage: {"rejects": path, "summary": path}}`` (either may be missing).
    Regular files only: a link or a FIFO under a report's name (a folder from elsewhere) is no report."""
    from sdg_data.io.sidecar import regular_entries

    out: dict[str, dict[str, Path]] = {}
    for p in regular_entries(folder, f"*{REJECTS_SUFFIX}"):
        out.setdefault(p.name[: -len(REJECTS_SUFFIX)], {})["rejects"] = p
    for p in regular_entries(folder, f"*{SUMMARY_SUFFIX}"):
        out.setdefault(p.name[: -len(SUMMARY_SUFFIX)], {})["summary"] = p
    return out


def clean_reject(row: Any, stage: str | None = None) -> dict[str, Any] | None:
    """A rejects line read back, in the one schema (``REJECT_KEYS``), or None when it is not one: its ``stage``
    and ``reason`` must be text (a list there would break every table that groups by them)."""
    from sdg_data.records import REJECT_KEYS

    if not isinstance(row, dict):
        return None
    got = {k: row.get(k) for k in REJECT_KEYS}
    got["stage"] = got["stage"] if got["stage"] is not None else stage
    if not isinstance(got["stage"], str) or not isinstance(got["reason"], str):
        return None
    if got["line"] is not None and type(got["line"]) is not int:
        got["line"] = None
    return got


def read_reports(folder: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]], int]:
    """The stage reports in ``folder``, read as sidecars (regular files, capped, no links): each report's summary
    (a JSON object with read / kept counts), each rejects file's well-formed lines in the one schema (keyed by the
    file's stage name, as the summaries are), and how many lines were skipped as malformed."""
    from sdg_data.io.sidecar import iter_json_lines, read_json_object

    summaries: dict[str, dict[str, Any]] = {}
    rejects: dict[str, list[dict[str, Any]]] = {}
    skipped = 0
    for stage, found in stage_files(folder).items():
        if "summary" in found:
            got = read_json_object(found["summary"])
            if got is not None and isinstance(got.get("read"), int) and isinstance(got.get("kept"), int):
                summaries[stage] = got
        if "rejects" in found:
            rows, bad = iter_json_lines(found["rejects"])
            skipped += bad
            for row in rows:
                got = clean_reject(row, stage)
                if got is None:
                    skipped += 1
                else:
                    rejects.setdefault(stage, []).append(got)
    return summaries, rejects, skipped


class NothingKept(RuntimeError):
    """A run that read input and kept none of it. The command exits non-zero: a run with nothing to show is not
    a success, however cleanly it ended."""


def _reason_shape(reason: str) -> str:
    """A reason with its particulars (quoted names, numbers, paths) blanked, so rejects of one kind group."""
    import re

    shape = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    shape = re.sub(r"(/[^\s:;,)]+)+", "PATH", shape)
    return re.sub(r"\d+(\.\d+)?", "N", shape)


def top_reasons(rejects: list[Reject] | list[dict[str, Any]], k: int = 3) -> list[tuple[str, int]]:
    """The k most common kinds of reject (made in this run, or read back from a file), each as (one example reason,
    how many of its kind), most first."""
    groups: dict[str, list[Any]] = {}
    for r in rejects:
        reason = str(r.reason if isinstance(r, Reject) else r.get("reason", "?"))
        g = groups.setdefault(_reason_shape(reason), [reason, 0])
        g[1] += 1
    return [(ex, n) for ex, n in sorted(groups.values(), key=lambda g: -g[1])[:k]]


def read_rejects(path: str | Path) -> list[dict[str, Any]]:
    """A rejects file's rows (a missing, unreadable, linked or oversized file: none; malformed lines skipped)."""
    from sdg_data.io.sidecar import iter_json_lines

    return iter_json_lines(path)[0]


def require_kept(
    summary: dict[str, Any], rejects_path: str | Path, what: str = "records", empty_ok: bool = False
) -> None:
    """Raise :class:`NothingKept` when a run read input and kept none of it (or read nothing, unless
    ``empty_ok``), naming the count, the top 3 kinds of reason and the rejects file. Inputs left out on purpose
    (a --limit, an annotator's skip) with nothing rejected are not a failure."""
    read, kept, rejected = summary.get("read", 0), summary.get("kept", 0), summary.get("rejected", 0)
    stage = summary.get("stage", "run")
    if summary.get("failed_run"):  # the reports went to the failed run's own place
        rejects_path = Path(summary["failed_run"]) / Path(rejects_path).name
    if kept or (read and not rejected) or (not read and empty_ok):
        return
    if not read:
        raise NothingKept(f"{stage}: read 0 {what}; nothing to do")
    tops = top_reasons(read_rejects(rejects_path))
    listed = "; ".join(f"{reason} (x{n})" if n > 1 else reason for reason, n in tops)
    raise NothingKept(
        f"{stage}: kept 0 of {read} {what} ({rejected} rejected, all in {rejects_path}; earlier outputs left as they "
        f"were); top reasons: {listed}"
    )
