"""Keys stay out of everything we write: rejects, summaries, logs, error lines and dataset files.

Keys are read from the environment (never from a file or flag). Some servers and proxies echo the key back in an
error body, and that text would otherwise travel into a rejects file; :func:`redact` replaces every configured key
value with ``***`` wherever text leaves the process. Stages name extra variables with :func:`register`.
"""

from __future__ import annotations

import logging
import os
from typing import Any


KEY_ENV_VARS: set[str] = {
    "OPENAI_API_KEY",
    "SDG_DETECTOR_API_KEY",
    "SDG_JUDGE_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "LABEL_STUDIO_API_KEY",
    "LABEL_STUDIO_PASSWORD",
}
MASK = "***"
_MIN_LEN = 6  # shorter values ("EMPTY", "1") would mask ordinary words


def register(*env_vars: str) -> None:
    """Also treat the values of these environment variables as secrets (a config's ``api_key_env``)."""
    KEY_ENV_VARS.update(v for v in env_vars if v)


def secret_values() -> list[str]:
    """The configured key values present now, longest first (so a key containing another is masked whole)."""
    vals = {os.environ.get(name, "") for name in KEY_ENV_VARS}
    return sorted((v for v in vals if len(v) >= _MIN_LEN), key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every key value replaced by ``***``."""
    for s in secret_values() if secrets is None else secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact_obj(obj: Any, secrets: list[str] | None = None) -> Any:
    """A JSON-like value with every string redacted (keys of mappings too)."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return obj
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {redact(k, secrets) if isinstance(k, str) else k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, secrets) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that masks key values in every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if secrets:
            try:
                msg = record.getMessage()
            except Exception:  # a bad format string is logging's problem, not ours
                return True
            red = redact(msg, secrets)
            if red != msg:
                record.msg, record.args = red, None
        return True


def install_log_filter() -> None:
    """Mask keys in every handler of the root logger (and any added later through basicConfig)."""
    root = logging.getLogger()
    flt = RedactingFilter()
    if not any(isinstance(f, RedactingFilter) for f in root.filters):
        root.addFilter(flt)
    for h in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(flt)
