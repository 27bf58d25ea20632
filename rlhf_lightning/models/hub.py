"""Push an exported model directory to a Hugging Face Hub repository."""

from __future__ import annotations

from pathlib import Path

from rlhf_lightning.errors import ModelError


def push_model_dir(
    directory: str | Path,
    repo_id: str,
    *,
    commit_message: str = "Upload model trained with rlhf_lightning",
    token: str | None = None,
    private: bool | None = None,
    endpoint: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload every file of `directory` in one commit.

    Args:
        directory: a complete export (weights, tokenizer, README.md model card).
        repo_id: ``owner/name`` on the Hub.
        token: a Hub token; None uses the one ``huggingface-cli login`` stored (or HF_TOKEN).
        private: create the repository private; None keeps the Hub's default.
        endpoint: the Hub's URL; None uses ``HF_ENDPOINT`` or huggingface.co.

    Returns:
        The URL of the commit.

    Raises:
        ModelError: If `directory` holds no model, or the Hub refuses or cannot be reached.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(directory)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ModelError(
            f"push_to_hub: {folder} holds no exported model (no config.json or "
            "adapter_config.json). Fix: train first, or push a directory save_model wrote."
        )
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message
        )
    except (HfHubHTTPError, OSError) as err:
        raise ModelError(
            f"push_to_hub: uploading {folder} to {repo_id} failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Fix: check the repository name, "
            "your token (huggingface-cli login or token=), and that the Hub can be reached."
        ) from err
    return str(commit.commit_url)
