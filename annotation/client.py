"""The connection to Label Studio (SDK 2.x) with bounded retries, and the SDG project on it.

Errors name what went wrong in one line (server down, wrong token, a project the config does not fit); the token
is never part of a message, a log line or a file.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from annotation.config import AnnotateConfig
from annotation.labeling import CONFIG_VERSION, guidelines_html, label_config


log = logging.getLogger(__name__)
T = TypeVar("T")
PROJECT_TAG = f"[{CONFIG_VERSION}]"  # in the description: how init finds its project again


class AnnotateError(RuntimeError):
    """A failure the user can act on, said in one line."""


class Connection:
    def __init__(self, cfg: AnnotateConfig, token: str | None = None):
        from label_studio_sdk import LabelStudio

        token = token if token is not None else os.environ.get(cfg.token_env, "")
        if not token:
            raise AnnotateError(f"set {cfg.token_env} to the Label Studio API token (or a personal access token)")
        self.cfg = cfg
        self._token = token
        self.client = LabelStudio(base_url=cfg.url, api_key=token, timeout=cfg.timeout_s)
        # one retry layer: call() below. The SDK would retry 5xx and 429 twice more under each of our tries (a
        # POST up to 18 times), so its own retries are off.
        self.client._client_wrapper.httpx_client.base_max_retries = 0

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"Connection({self.cfg.url!r})"

    def call(self, what: str, fn: Callable[[], T], before_retry: Callable[[], None] | None = None) -> T:
        """Run one API call; connection failures and 5xx are retried with backoff, then a clear error.

        A write that is not idempotent passes ``before_retry``: the failed try may have been stored before its
        answer was lost, so the caller looks at the server and trims what it will send again."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        cfg = self.cfg
        for attempt in range(cfg.max_retries + 1):
            try:
                return fn()
            except ApiError as exc:
                code = exc.status_code or 0
                if code == 401:
                    raise AnnotateError(
                        f"{what}: the server at {cfg.url} rejects the token in {cfg.token_env}"
                    ) from None
                if code == 403:
                    raise AnnotateError(f"{what}: the token's user may not do this (HTTP 403)") from None
                if code < 500:
                    body = str(exc.body)[:300]
                    raise AnnotateError(f"{what}: HTTP {code}: {body}") from None
                reason = f"HTTP {code}"
            except (httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ConnectTimeout) as exc:
                reason = type(exc).__name__
                if isinstance(exc, httpx.ConnectError) and str(getattr(cfg, "found_by", "")).startswith("the default"):
                    attempt = cfg.max_retries  # no server was found anywhere: nothing to wait for
            if attempt == cfg.max_retries:
                found = getattr(cfg, "found_by", None)
                raise AnnotateError(
                    f"{what}: Label Studio at {cfg.url} is not answering ({reason}) after {cfg.max_retries + 1} tries"
                    + (f"; that address came from {found}" if found else "")
                    + " (start one with sdg annotate serve, or give --url)"
                ) from None
            wait = min(cfg.backoff_max_s, cfg.backoff_base_s * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s: %s; retrying in %.1f s", what, reason, wait)
            time.sleep(wait)
            if before_retry is not None:
                before_retry()
        raise AssertionError("unreachable")

    def get_json(
        self, what: str, path: str, params: dict[str, Any] | None = None, method: str = "GET", json: Any = None
    ) -> Any:
        """One request of the API as plain JSON (GET unless told), through :meth:`call` (retries, one-line errors):
        for listings where the SDK's typed objects or its pager cost more than the fields we read, and for fields
        the SDK does not send (a task's overlap)."""
        http = self.client._client_wrapper.httpx_client

        def get() -> Any:
            resp = http.request(path, method=method, params=params or {}, json=json)
            if resp.status_code >= 400:
                from label_studio_sdk.core.api_error import ApiError

                raise ApiError(status_code=resp.status_code, body=resp.text[:300])
            return resp.json()

        return self.call(what, get)

    def whoami(self) -> Any:
        return self.call("whoami", lambda: self.client.users.whoami())


def all_pages(pager: Any) -> list[Any]:
    """Every item of an SDK pager, following the server's ``next`` link. The SDK's own iteration asks for the
    page after the last one and leaves an "Invalid page" traceback in the server's log each time."""
    items = list(pager.items or [])
    while getattr(getattr(pager, "response", None), "next", None) and pager.get_next is not None:
        pager = pager.get_next()
        if pager is None:
            break
        items.extend(pager.items or [])
    return items


def find_project(conn: Connection) -> Any | None:
    """The SDG project: the one whose description carries our tag and whose title is the configured one."""
    # filtered by title and only the fields we read: the full list computes task counts for every project
    projects = conn.call(
        "list projects",
        lambda: all_pages(
            conn.client.projects.list(
                title=conn.cfg.project_title,
                include="id,title,description,maximum_annotations,model_version",
                page_size=100,
            )
        ),
    )
    mine = [p for p in projects if p.title == conn.cfg.project_title and PROJECT_TAG in (p.description or "")]
    if len(mine) > 1:
        ids = ", ".join(str(p.id) for p in mine)
        raise AnnotateError(f"several projects titled {conn.cfg.project_title!r} carry {PROJECT_TAG}: {ids}")
    return mine[0] if mine else None


def require_project(conn: Connection) -> Any:
    p = find_project(conn)
    if p is None:
        raise AnnotateError(f"no project {conn.cfg.project_title!r} on {conn.cfg.url}; run sdg annotate init first")
    return p


def ensure_project(conn: Connection) -> tuple[Any, bool]:
    """Create the project or bring it to the config (labeling config, guidelines; the overlap only when given, so
    a rerun without the team's recipe keeps it); idempotent. Returns (project, created)."""
    cfg = conn.cfg
    fields: dict[str, Any] = {
        "title": cfg.project_title,
        "description": f"Structured Defect Grounding: boxes with label, description and importance. {PROJECT_TAG}",
        "label_config": label_config(cfg.side_panels),
        "expert_instruction": guidelines_html(cfg.guidelines),
        "show_instruction": True,
        "show_collab_predictions": True,
        "enable_empty_annotation": True,  # a clean image is submitted with no boxes
        "show_skip_button": True,
    }
    if cfg.overlap is not None:
        fields["maximum_annotations"] = cfg.overlap
    existing = find_project(conn)
    image_root = project_image_root(conn, existing) if existing is not None else None
    if cfg.image_root is None:  # a new project's storage is the image root of the server it lives on
        raise AnnotateError(
            "no image root: start the server with sdg annotate serve --image-root DIR (the other commands read it "
            "from there), or give --image-root"
        )
    if image_root is not None and image_root != Path(cfg.image_root).resolve():
        raise AnnotateError(
            f"the project serves images from {image_root}, not {Path(cfg.image_root).resolve()}: its tasks point "
            "there. Give that folder as --image-root, or use another project_title for another folder"
        )
    if existing is None:
        project = conn.call(
            "create project", lambda: conn.client.projects.create(**{"maximum_annotations": 1, **fields})
        )
        created = True
    else:
        project = conn.call("update project", lambda: conn.client.projects.update(id=existing.id, **fields))
        created = False
    ensure_storage(conn, project.id)
    return project, created


def set_model_version(conn: Connection, project: Any, model_version: str) -> Any:
    """Show this model's predictions prefilled: the project's model version and nothing else changes."""
    return conn.call(
        "set the model version", lambda: conn.client.projects.update(id=project.id, model_version=model_version)
    )


def _storages(conn: Connection, project_id: int) -> list[Any]:
    return list(conn.call("list storages", lambda: conn.client.import_storage.local.list(project=project_id)))


def project_image_root(conn: Connection, project: Any) -> Path | None:
    """The folder the project serves images from (its Local Files storage), or None when it has none yet.

    When the config names no image root (``--image-root`` unset and no running ``serve`` state), it is set from
    here: the server remembers what it was started with, so push, predict, pull and status need no flag."""
    paths = {Path(s.path).resolve() for s in _storages(conn, project.id) if getattr(s, "path", None)}
    if len(paths) > 1:
        raise AnnotateError(
            f"project {project.id} has {len(paths)} local storages ({', '.join(map(str, sorted(paths)))}): "
            "give --image-root to say which one its images are under"
        )
    root = paths.pop() if paths else None
    if root is not None and conn.cfg.image_root is None:
        conn.cfg.image_root = str(root)
    return root


def require_image_root(conn: Connection, project: Any) -> Path:
    """The image root a command that reads or writes task paths uses: the given one, else the project's."""
    root = project_image_root(conn, project)
    if conn.cfg.image_root is None:
        raise AnnotateError(
            f"project {project.id} has no image storage and no image root was given: run sdg annotate init on the "
            "server started with sdg annotate serve --image-root DIR"
        )
    given = Path(conn.cfg.image_root).resolve()
    if root is not None and given != root:
        raise AnnotateError(
            f"--image-root {given} is not the folder project {project.id} serves images from ({root}); leave it "
            "out to use the project's"
        )
    return given


def ensure_storage(conn: Connection, project_id: int) -> Any:
    """One Local Files storage for the image root: it only authorises serving those files (never synced: tasks
    are imported with their metadata instead)."""
    root = os.path.abspath(conn.cfg.image_root)
    for s in _storages(conn, project_id):
        if os.path.abspath(getattr(s, "path", "") or "") == root:
            return s
    try:
        return conn.call(
            "create storage",
            lambda: conn.client.import_storage.local.create(
                project=project_id, path=root, title="SDG images", use_blob_urls=True, recursive_scan=True
            ),
        )
    except AnnotateError as exc:
        if "LOCAL_FILES_DOCUMENT_ROOT" in str(exc) or "subdirectory" in str(exc):
            raise AnnotateError(
                f"the server does not serve files from {root}: it serves only the image root it was started with. "
                f"Restart it with sdg annotate serve --image-root {root}, or leave --image-root out"
            ) from None
        raise


def project_settings(project: Any) -> dict[str, Any]:
    return {
        "id": project.id,
        "title": project.title,
        "maximum_annotations": project.maximum_annotations,
        "model_version": getattr(project, "model_version", None),
        "config_version": CONFIG_VERSION,
    }
