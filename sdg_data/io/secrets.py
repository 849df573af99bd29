"""Keys stay out of everything we write: rejects, summaries, logs, error lines and dataset files.

Keys are read from the environment (never from a file or flag). Some servers and proxies echo the key back in an
error body, and that text would otherwise travel into a rejects file; :func:`redact` replaces every configured key
value with ``***`` wherever text leaves the process. Stages name extra variables with :func:`register`.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import re
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


# Between two characters of a key, what a server's line folding or a JSON/HTTP echo may insert: whitespace and
# escaped newlines (a key split across lines is still the key).
_GAP = r"(?:\s|\\[nrt])*"
_B64 = "A-Za-z0-9+/_-"


def _b64_cores(key: str) -> list[str]:
    """The base64 text that encodes ``key`` wherever it sits in the encoded data (three alignments, standard and
    URL-safe alphabets), cut to the characters that depend on the key alone, so a key inside ``Basic`` credentials
    or any encoded header is found."""
    raw, out = key.encode("utf-8"), []
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        core = enc[(0, 2, 3)[pad] : (pad + len(raw)) // 3 * 4]
        if len(core) >= 8:
            out += [core, core.replace("+", "-").replace("/", "_")]
    return out


@functools.lru_cache(maxsize=16)
def _pattern(secrets: tuple[str, ...]) -> tuple[re.Pattern[str], int]:
    """One pattern for every form of every key: broken by whitespace or escaped newlines (group-less alternatives
    first), then the base64 cores; and the number of the first base64 alternative's group."""
    gapped = [_GAP.join(re.escape(c) for c in key) for key in secrets]
    cores = [re.escape(core) for key in secrets for core in _b64_cores(key)]
    text = "|".join(gapped) if gapped else "(?!)"
    return re.compile(f"{text}|({'|'.join(cores)})" if cores else text), 1


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-=")


def redact(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with every key value replaced by ``***``: verbatim, split across lines, or base64-encoded (then
    the whole base64 token goes)."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return text
    for key in secrets:  # the common case, and cheap: the key verbatim
        text = text.replace(key, MASK)
    pattern, group = _pattern(tuple(secrets))
    spans = []
    for m in pattern.finditer(text):
        start, end = m.span()
        if m.group(group) is not None:  # widen a base64 core to its whole token
            while start > 0 and text[start - 1] in _B64_CHARS:
                start -= 1
            while end < len(text) and text[end] in _B64_CHARS:
                end += 1
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    for start, end in reversed(spans):
        text = text[:start] + MASK + text[end:]
    return text


def mask_bytes(data: bytes, secrets: list[str] | None = None) -> bytes:
    """``data`` with every key value's bytes (verbatim or base64) overwritten by ``*`` of the same length: binary
    files keep their size and layout, and a file that carried a key no longer does (a PNG whose text chunk held
    one then fails its checksum, which is the point: it is not stored as it came)."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return data
    for form in {f for key in secrets for f in (key, *_b64_cores(key))}:
        raw = form.encode("utf-8")
        data = data.replace(raw, b"*" * len(raw))
    return data


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
