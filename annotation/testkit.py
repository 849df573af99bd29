"""Annotators as the server sees them, for tests and the concurrency benchmark: people who join with the invite
link, log in, and work through the label stream in their session, the way the editor does (``GET next``, ``POST``
the annotation in the editor's structure with the session cookie and CSRF token)."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from annotation.uiform import ui_region


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server the tests or a benchmark start."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def invite_link(url: str, token: str) -> str:
    r = httpx.get(f"{url}/api/invite", headers={"Authorization": f"Token {token}"}, timeout=30)
    r.raise_for_status()
    link = r.json()["invite_url"]
    return link if link.startswith("http") else url + link


def _csrf(page: str) -> str:
    m = re.search(r'csrfmiddlewaretoken" value="([^"]+)', page)
    if not m:
        raise RuntimeError("no CSRF token on the page")
    return m.group(1)


def join(url: str, invite: str, email: str, password: str, timeout: float = 60) -> httpx.Client:
    """Sign up through the invite link (or log in when the account exists); returns the logged-in session."""
    s = httpx.Client(base_url=url, timeout=timeout, follow_redirects=False)
    page = s.get(invite.replace(url, "") if invite.startswith(url) else invite)
    form = {"csrfmiddlewaretoken": _csrf(page.text), "email": email, "password": password, "how_find_us": "x"}
    r = s.post(page.request.url.raw_path.decode(), data=form, headers={"Referer": str(page.request.url)})
    if r.status_code not in (302, 303):  # the account exists: log in instead
        login = s.get("/user/login/")
        form = {"csrfmiddlewaretoken": _csrf(login.text), "email": email, "password": password}
        r = s.post("/user/login/", data=form, headers={"Referer": f"{url}/user/login/"})
        if r.status_code not in (302, 303):
            raise RuntimeError(f"{email}: could not sign up or log in (HTTP {r.status_code})")
    s.headers["X-CSRFToken"] = s.cookies.get("csrftoken", "")
    s.headers["Referer"] = f"{url}/"
    return s


def random_result(rng: random.Random, width: int, height: int) -> list[dict[str, Any]]:
    """0-3 boxes with a description and importance each, in the editor's structure (0 boxes: a clean image)."""
    out: list[dict[str, Any]] = []
    for k in range(rng.choice([0, 1, 1, 2, 3])):
        w, h = rng.uniform(5, 40), rng.uniform(5, 40)
        x, y = rng.uniform(0, 100 - w), rng.uniform(0, 100 - h)
        label = rng.choice(["artifact", "misalignment"])
        out += ui_region(f"r{k}-{rng.randrange(10**9)}", label, x, y, w, h, f"defect {k}", rng.randint(1, 100),
                         width, height)  # fmt: skip
    return out


def _detail(r: httpx.Response) -> str:
    """The server's reason when it gives one as JSON (an HTML error page says nothing useful)."""
    try:
        body = r.json()
    except ValueError:
        return ""
    return f" {str(body.get('detail') or body)[:80]}" if isinstance(body, dict) else ""


@dataclass
class Annotator:
    """One person working through a project's label stream; records what the server answered."""

    email: str
    session: httpx.Client
    project: int
    think_s: tuple[float, float] = (0.0, 0.0)  # pause per task, uniform in this range
    seed: int = 0
    submitted: list[tuple[int, int]] = field(default_factory=list)  # (task id, annotation id)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def step(self, rng: random.Random) -> bool:
        """Take the next task and submit it; False when the stream is empty."""
        t0 = time.perf_counter()
        try:
            r = self.session.get(f"/api/projects/{self.project}/next")
        except httpx.HTTPError as exc:
            self.errors.append(f"next: {type(exc).__name__}")
            return True
        if r.status_code == 404:
            return False
        if r.status_code != 200:
            self.errors.append(f"next: HTTP {r.status_code}{_detail(r)}")
            return True
        task = r.json()
        size = self._image_size(task)
        if rng.random() < 0.05:  # skipped, as people do with an image that cannot be judged
            body = {"result": [], "was_cancelled": True, "lead_time": 3.0}
        else:
            body = {"result": random_result(rng, *size), "lead_time": round(rng.uniform(10, 90), 1)}
        time.sleep(rng.uniform(*self.think_s))
        try:
            r = self.session.post(f"/api/tasks/{task['id']}/annotations/?project={self.project}", json=body)
        except httpx.HTTPError as exc:
            self.errors.append(f"submit: {type(exc).__name__}")
            return True
        self.latencies.append(time.perf_counter() - t0)
        if r.status_code != 201:
            self.errors.append(f"submit: HTTP {r.status_code}{_detail(r)}")
        else:
            self.submitted.append((task["id"], r.json()["id"]))
        return True

    def _image_size(self, task: dict[str, Any]) -> tuple[int, int]:
        """The image's natural size, as the browser measures it and writes it into every region: the task's image
        fetched through the server (512 x 512 when it cannot be, as for tasks whose image is not served)."""
        import io

        from PIL import Image

        url = str((task.get("data") or {}).get("image") or "")
        try:
            r = self.session.get(url) if url else None
            if r is not None and r.status_code == 200:
                with Image.open(io.BytesIO(r.content)) as im:
                    return im.size
        except (httpx.HTTPError, OSError):
            pass
        return 512, 512

    def work(self, stop, max_tasks: int | None = None) -> None:
        """Annotate until ``stop`` (a threading.Event) is set, the stream runs dry or ``max_tasks`` are done."""
        rng = random.Random(self.seed)
        done = 0
        while not stop.is_set() and (max_tasks is None or done < max_tasks):
            if not self.step(rng):
                time.sleep(0.5)  # nothing to do yet: an import may be on its way
                continue
            done += 1
