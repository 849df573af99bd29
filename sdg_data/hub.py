"""Upload a dataset folder to the Hugging Face Hub; failures become one line without the server's body."""

from __future__ import annotations

from pathlib import Path


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
