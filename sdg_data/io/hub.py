"""Upload a dataset folder to the Hugging Face Hub; failures become one line without the server's body."""

from __future__ import annotations

import os
from pathlib import Path


def check_push(repo_id: str) -> None:
    """Before a build that will be pushed: a token, and a Hub that answers. One line naming what is missing, so the
    build does not run for minutes to fail at its last step."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise RuntimeError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; build without --push-to-hub and push "
                           "later (hf upload --repo-type dataset REPO FOLDER)")  # fmt: skip
    from huggingface_hub import get_token

    if not get_token():
        raise RuntimeError(f"--push-to-hub {repo_id}: no Hugging Face token (set HF_TOKEN or run hf auth login)")
    if not _hub_reachable():
        raise RuntimeError(f"--push-to-hub {repo_id}: the Hub is not reachable from here; build without "
                           "--push-to-hub and push later (hf upload --repo-type dataset REPO FOLDER)")  # fmt: skip


def push_dataset(folder: str | Path, repo_id: str, private: bool = False) -> None:
    """Create (if needed) and upload. The token comes from ``HF_TOKEN`` (or huggingface-cli login), never a flag.

    Errors are re-raised as RuntimeError naming the status and what failed: a Hub error's body can echo request
    headers, so it is never shown."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    step = "create the repo"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        step = "upload the folder"
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = " (check HF_TOKEN and its write access)" if status in (401, 403) else ""
        raise RuntimeError(f"push to the Hub failed: could not {step} {repo_id}: HTTP {status}{hint}") from None
    except OSError as exc:  # no network, DNS, TLS: the type says enough, the text may hold a URL with a token
        raise RuntimeError(f"push to the Hub failed: could not {step} {repo_id}: {type(exc).__name__}") from None


def _offline() -> bool:
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in names)


def _hub_reachable(timeout_s: float = 4.0) -> bool:
    """One short request to the Hub's endpoint, no retries: a model id that is not cached fails in seconds when
    the Hub cannot be reached (transformers would retry for minutes, then say something misleading)."""
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout_s, follow_redirects=True)
        return True
    except httpx.HTTPError:
        return False


def require_model(model: str, flag: str, what: str = "model", also: str = "") -> None:
    """Return when ``model`` is a local folder, a cached Hub id, or a Hub id the Hub can serve now; otherwise raise
    one OSError line saying how to get it and which flag takes a local folder (``also``: other ways out)."""
    also = f"; {also}" if also else ""
    if Path(model).expanduser().is_dir():
        return
    first = model.split("/", 1)[0]
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or (first and Path(first).is_dir()):
        # a path (runs/grpo where runs/ is a folder here): a missing folder, never a Hub lookup
        raise OSError(f"{what} {model!r}: no such folder (give {flag} an existing folder or a Hub id){also}")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json") or try_to_load_from_cache(model, "model_index.json")
    except ValueError:  # not a valid repo id
        raise OSError(
            f"{what} {model!r}: neither a folder nor a Hub model id (give {flag} a local folder){also}"
        ) from None
    if isinstance(cached, str):
        return
    how = f"download it where the Hub is reachable (hf download {model}) or give {flag} a local folder{also}"
    neither = f"{what} {model!r}: no such folder here, and not in the local Hugging Face cache"
    if _offline():
        raise OSError(f"{neither} (HF_HUB_OFFLINE is set): if it is a Hub id, {how}")
    if not _hub_reachable():
        raise OSError(f"{neither} (the Hub is not reachable): if it is a Hub id, {how}")
