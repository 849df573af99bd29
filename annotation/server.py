"""Starting and stopping a real Label Studio (pinned, in its own virtual environment) the way the project needs it.

Locked down by default: bound to 127.0.0.1, sign-up only through the organisation's invite link, local files
served only from the image root, no telemetry, no update checks, no error reports to a third party. The admin
account and its API token come from the environment (``LABEL_STUDIO_USERNAME``, ``LABEL_STUDIO_PASSWORD`` and the
token variable of the config); they are passed to the server process and never printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from annotation.config import AnnotateConfig, read_state, state_path


LABEL_STUDIO_VERSION = "1.23.2"


class ServerError(RuntimeError):
    pass


def server_env(cfg: AnnotateConfig, token: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: our settings over the caller's (which may add PostgreSQL or the admin user)."""
    env = dict(os.environ if base is None else base)
    root = document_root(cfg)
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(Path(cfg.data_dir).resolve()),
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LOCAL_FILES_SERVING_ENABLED": "true",
            "LOCAL_FILES_DOCUMENT_ROOT": str(root),
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
        }
    )
    if cfg.database == "postgresql":
        missing = [k for k in ("POSTGRE_HOST", "POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD") if not env.get(k)]
        if missing:
            raise ServerError(f"database postgresql needs {', '.join(missing)} in the environment")
        env["DJANGO_DB"] = "default"
        env.setdefault("POSTGRE_PORT", "5432")
    else:
        env.pop("DJANGO_DB", None)
    return env


def document_root(cfg: AnnotateConfig) -> Path:
    """LOCAL_FILES_DOCUMENT_ROOT: the image root's parent. Label Studio refuses a storage at the document root
    itself, and serves a file only under a storage, so with one storage at the image root nothing outside it is
    served."""
    root = Path(cfg.image_root or ".").resolve()
    if root.parent == root:
        raise ServerError(f"image_root {root} cannot be the file system root")
    return root.parent


def user_label_studio() -> Path:
    """The per-user Label Studio environment (``$XDG_DATA_HOME/sdg/label-studio-VERSION``): installed once, used
    from every working folder."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sdg" / f"label-studio-{LABEL_STUDIO_VERSION}"


def label_studio_places() -> list[Path]:
    """Where the label-studio program is looked for, in order, none of them relative to the working folder: the
    installation's own ``.venv-ls`` (what ``make install`` makes beside the checkout), one beside this Python, and
    the per-user environment."""
    import sys

    from sdg_data.io.bundled import ROOT

    return [ROOT / ".venv-ls" / "bin" / "label-studio", Path(sys.executable).parent / "label-studio",
            user_label_studio() / "bin" / "label-studio"]  # fmt: skip


def _binary(cfg: AnnotateConfig, install: bool = False) -> str:
    """The label-studio program: ``label_studio_bin`` (or ``$SDG_LABEL_STUDIO_BIN``) when given, else the first of
    :func:`label_studio_places` that exists. With ``install`` (``sdg annotate serve``) and none anywhere, it is
    installed once, per user, in an environment of its own (it pins its own Django stack)."""
    given = cfg.label_studio_bin or os.environ.get("SDG_LABEL_STUDIO_BIN")
    if given:
        found = given if Path(given).is_file() else shutil.which(given)
        if found:
            return str(found)
        raise ServerError(f"no Label Studio at {given} (label_studio_bin / $SDG_LABEL_STUDIO_BIN)")
    places = label_studio_places()
    for p in places:
        if p.is_file():
            return str(p)
    if install:
        install_label_studio(user_label_studio())
        if places[-1].is_file():
            return str(places[-1])
    raise ServerError(
        f"no Label Studio in {', '.join(str(p) for p in places)}; sdg annotate serve installs it once at the last "
        f"of them (or: python -m venv DIR && DIR/bin/pip install label-studio=={LABEL_STUDIO_VERSION}, then "
        "$SDG_LABEL_STUDIO_BIN=DIR/bin/label-studio)"
    )


def install_label_studio(venv: Path, python: str | None = None) -> None:
    """Create ``venv`` and pip-install the pinned Label Studio into it, saying so (a few minutes, once)."""
    import sys

    python = python or sys.executable
    print(f"Label Studio {LABEL_STUDIO_VERSION} is not installed: installing it into {venv} (first use, a few "
          f"minutes; pip's output goes to {venv}/install.log)", flush=True)  # fmt: skip
    venv.mkdir(parents=True, exist_ok=True)
    log_path = venv / "install.log"
    with open(log_path, "ab") as log:
        for step in (
            [python, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--upgrade", "pip"],
            [str(venv / "bin" / "python"), "-m", "pip", "install", f"label-studio=={LABEL_STUDIO_VERSION}"],
        ):
            if subprocess.call(step, stdout=log, stderr=subprocess.STDOUT) != 0:
                raise ServerError(f"installing Label Studio failed at: {' '.join(step[-3:])}; see {log_path}")
    print(f"installed Label Studio {LABEL_STUDIO_VERSION} into {venv}", flush=True)


def command(cfg: AnnotateConfig, install: bool = False) -> list[str]:
    return [_binary(cfg, install), "start", "--no-browser", "--internal-host", cfg.host, "--port", str(cfg.port)]


def admin_from_env() -> None:
    """The admin account the server creates at start (it owns the API token)."""
    missing = [k for k in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD") if not os.environ.get(k)]
    if missing:
        raise ServerError(f"set {' and '.join(missing)}: the admin account (email, password) the server creates")


def token_from_env(cfg: AnnotateConfig) -> str:
    token = os.environ.get(cfg.token_env, "")
    check_token(cfg, token)
    return token


def check_token(cfg: AnnotateConfig, token: str) -> None:
    """The server stores the admin's token in a 40-character column: PostgreSQL refuses a longer one at start
    (SQLite would keep it), so both are held to 6-40 characters, e.g. ``openssl rand -hex 20``."""
    if not 6 <= len(token) <= 40:
        raise ServerError(
            f"set {cfg.token_env} to the API token: 6 to 40 characters (for a new server any secret, "
            "e.g. openssl rand -hex 20)"
        )


def start(cfg: AnnotateConfig, token: str, log_path: str | Path | None = None, env: dict | None = None):
    """Start the server in the background; returns the process (its pid stops it). Waits until it answers."""
    if env is None:
        admin_from_env()
    check_token(cfg, token)
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    log = open(log_path or Path(cfg.data_dir) / "server.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        command(cfg), env=server_env(cfg, token, env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_ready(cfg, token, proc)
    except BaseException:
        stop(proc.pid)
        raise
    return proc


def wait_ready(
    cfg: AnnotateConfig,
    token: str,
    proc: subprocess.Popen | None = None,
    timeout_s: float = 180,
    log_path: Path | None = None,
) -> None:
    """Poll whoami with the token until the server answers (a fresh data folder migrates for about 40 s)."""
    url = f"http://{cfg.host}:{cfg.port}/api/current-user/whoami"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    first_401: float | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(
                f"Label Studio exited with code {proc.returncode}; see {log_path or Path(cfg.data_dir) / 'server.log'}"
            )
        try:
            req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code == 401:  # up, but the token is not the admin's (a data folder made with another token?)
                first_401 = first_401 or time.monotonic()
                if time.monotonic() - first_401 > 15:
                    raise ServerError(
                        f"Label Studio at {cfg.host}:{cfg.port} rejects the token in {cfg.token_env} (HTTP 401)"
                    ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise ServerError(f"Label Studio at {cfg.host}:{cfg.port} not ready after {timeout_s:.0f} s ({last})")


def stop(pid: int, timeout_s: float = 20) -> None:
    """Stop the server's process group by pid: SIGTERM, then SIGKILL."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)


def _is_label_studio(pid: int) -> bool:
    """Guard against a recycled pid: only a Label Studio process is ever stopped by ``sdg annotate stop``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the state file, which serve wrote for this pid
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def invite_url(url: str, token: str) -> str | None:
    """The organisation's invite link (``GET /api/invite``): sign-up is closed without it. None if the server
    does not say (the steps to get it are printed instead)."""
    import httpx

    try:
        r = httpx.get(f"{url}/api/invite", headers={"Authorization": f"Token {token}"}, timeout=30)
        r.raise_for_status()
        link = r.json().get("invite_url")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    if not isinstance(link, str) or not link:
        return None
    return link if link.startswith("http") else url.rstrip("/") + link


INVITE_STEPS = "log in as the lead, open Organization (top left menu), press Add People, copy the link"


def banner(cfg: AnnotateConfig, log_path: Path, invite: str | None = None) -> str:
    """What a lead needs once the server is up: where it is, how to log in, the link annotators sign up with,
    where its data and log live, how to stop it. The password is never printed, only where it comes from."""
    url = f"http://{cfg.host}:{cfg.port}"
    return "\n".join(
        [
            f"Label Studio {LABEL_STUDIO_VERSION} is up at {url}",
            f"  log in:     {os.environ.get('LABEL_STUDIO_USERNAME')} with the password in $LABEL_STUDIO_PASSWORD",
            f"  annotators: sign up with the invite link {invite}" if invite else f"  annotators: {INVITE_STEPS}",
            f"  images:     {Path(cfg.image_root or '.').resolve()} (push, predict and pull read this from here)",
            f"  data:       {Path(cfg.data_dir).resolve()} ({cfg.database})",
            f"  server log: {log_path.resolve()}",
            "  next:       sdg annotate init, then sdg annotate push RECORDS.jsonl",
            "  stop:       Ctrl+C here, or sdg annotate stop from another shell",
        ]
    )


def serve(cfg: AnnotateConfig) -> int:
    """Run the server in the foreground (``sdg annotate serve``) until interrupted.

    The server runs in its own process group; SIGINT, SIGTERM and SIGHUP stop that whole group (Label Studio
    starts workers), so no server is left behind. Its own output (a line per request) goes to DATA_DIR/server.log;
    the terminal gets one banner. While it runs, ``DATA_DIR/server.json`` holds its pid, URL and image root:
    ``sdg annotate stop`` and the other annotate commands read it."""
    token = token_from_env(cfg)
    admin_from_env()
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    running = read_state(cfg)
    if running:
        raise ServerError(
            f"a server for {cfg.data_dir} already runs at {running.get('url')} (pid {running.get('pid')}); "
            "sdg annotate stop ends it"
        )
    env = server_env(cfg, token)
    argv = command(cfg, install=True)
    log_path = Path(cfg.data_dir) / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    state = state_path(cfg)

    def _stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    last = None
    try:
        running, last = _record_running(cfg, proc.pid, log_path)
        print(f"starting Label Studio (a new data folder migrates its database first, about a minute); "
              f"its log: {log_path}", flush=True)  # fmt: skip
        wait_ready(cfg, token, proc, timeout_s=900, log_path=log_path)
        print(banner(cfg, log_path, invite_url(running["url"], token)), flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc.pid)
        return proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            stop(proc.pid)
        state.unlink(missing_ok=True)
        _forget_last_server(last, proc.pid)


def _record_running(cfg: AnnotateConfig, pid: int, log_path: Path) -> tuple[dict, Path | None]:
    """Write the running server's state in its data folder, and as the last server this user started (found from
    any working folder); the state, and the per-user file when it could be written."""
    import json

    from sdg_data.io.files import write_text

    running = {
        "pid": pid,
        "url": f"http://{cfg.host}:{cfg.port}",
        "data_dir": str(Path(cfg.data_dir).resolve()),
        "image_root": str(Path(cfg.image_root or ".").resolve()),
        "log": str(log_path.resolve()),
    }
    write_text(state_path(cfg), json.dumps(running) + "\n")
    last = _last_server_file()
    if last is not None:
        try:
            write_text(last, json.dumps(running) + "\n")
        except OSError:
            last = None
    return running, last


def _last_server_file() -> Path | None:
    from annotation.config import last_server_path

    try:
        return last_server_path()
    except RuntimeError:  # no home folder: commands then need --url or --data-dir
        return None


def _forget_last_server(path: Path | None, pid: int) -> None:
    """Remove the per-user pointer when it still names this server (another one may have started since)."""
    from sdg_data.io.sidecar import read_json_object

    if path is not None and (read_json_object(path) or {}).get("pid") == pid:
        path.unlink(missing_ok=True)


def processes_of(data_dir: str | Path) -> list[int]:
    """The Label Studio processes (any process group) serving ``data_dir``, read from /proc: what must be gone
    after a stop. Empty where there is no /proc."""
    want = str(Path(data_dir).resolve()).encode()
    out = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (b"label-studio" in cmd or b"label_studio" in cmd) and b"LABEL_STUDIO_BASE_DATA_DIR=" + want in env:
            out.append(int(entry.name))
    return sorted(out)


def stop_server(cfg: AnnotateConfig) -> dict | None:
    """``sdg annotate stop``: stop the server that ``serve`` started for this data folder; None if none runs."""
    state = read_state(cfg)
    if state is None:
        state_path(cfg).unlink(missing_ok=True)
        return None
    pid = int(state["pid"])
    if not _is_label_studio(pid):
        state_path(cfg).unlink(missing_ok=True)
        raise ServerError(f"pid {pid} in {state_path(cfg)} is not a Label Studio process; removed the stale file")
    stop(pid)
    for left in processes_of(cfg.data_dir):  # a worker that left the group still serves this data folder
        stop(left)
    state_path(cfg).unlink(missing_ok=True)
    return state


def start_from_cache(cfg: AnnotateConfig, token: str, cache: str | Path, env: dict | None = None):
    """Start on a copy of a migrated data folder kept in ``cache`` (built on first use: ~40 s of migrations), so a
    test or benchmark server is up in seconds. ``cfg.data_dir`` receives the copy."""
    cache = Path(cache)
    if not (cache / "label_studio.sqlite3").exists():
        building = cache.with_name(f"{cache.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        fresh = AnnotateConfig(**{**cfg.__dict__, "data_dir": str(building)})
        proc = start(fresh, token, env=env)
        stop(proc.pid)
        (building / "server.log").unlink(missing_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        building.rename(cache)
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    shutil.copytree(cache, cfg.data_dir)
    return start(cfg, token, env=env)


def start_on_postgres(cfg: AnnotateConfig, token: str, pg, cache: str | Path, env: dict | None = None):
    """Start on PostgreSQL (``pg``: an :class:`annotation.postgres.LocalPostgres`, not yet started) from a cached,
    migrated cluster kept in ``cache`` (built on first use: initdb and ~40 s of migrations). Returns the server's
    process; the caller stops it, then ``pg``."""
    from annotation.postgres import LocalPostgres

    cache = Path(cache)
    env = dict(os.environ if env is None else env)
    if not (cache / "PG_VERSION").exists():
        building = LocalPostgres(
            cache.parent / f"{cache.name}.building-{os.getpid()}", pg.port, pg.user, pg.password, pg.database
        )
        shutil.rmtree(building.folder, ignore_errors=True)
        building.start()
        try:
            ls_cfg = AnnotateConfig(
                **{**cfg.__dict__, "data_dir": str(building.folder / "ls"), "database": "postgresql"}
            )
            stop(start(ls_cfg, token, env={**env, **building.env()}).pid)
        finally:
            building.stop()
        shutil.rmtree(cache, ignore_errors=True)
        building.pgdata.rename(cache)
        shutil.rmtree(building.folder, ignore_errors=True)
    pg.copy_from(cache)
    pg.start()
    cfg.database = "postgresql"
    try:
        return start(cfg, token, env={**env, **pg.env()})
    except BaseException:
        pg.stop()
        raise


def default_cache(token: str, database: str = "sqlite") -> Path:
    """Where a migrated data folder (or PostgreSQL cluster) is cached: per Label Studio version, database and admin
    token, because the server writes the token into the admin account only when it creates it."""
    import hashlib

    tag = hashlib.sha256(token.encode()).hexdigest()[:10]
    root = Path(os.environ.get("SDG_CACHE", Path.home() / ".cache" / "sdg"))
    return root / f"label-studio-{LABEL_STUDIO_VERSION}-{database}-{tag}"
