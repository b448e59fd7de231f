"""Publishing to the Hugging Face Hub: one config (dataset × language) at a time, in a data-only dataset repo.

The data goes through ``datasets``' own ``push_to_hub(config_name=...)``, which writes the Parquet shards under
``<config_name>/`` and merges the ``configs:``/``dataset_info:`` YAML of ``README.md``, leaving the other
configs untouched. An optional card is then pushed on top, keeping that YAML.

Tokens come from the ``token`` argument or huggingface_hub's usual resolution (``HF_TOKEN``, then the stored
login). They are only handed to huggingface_hub: never logged, never put into a card or an error message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xl_suite.errors import HubOfflineError, HubPushError, InvalidArgumentError
from xl_suite.safety import install_secret_filter, scrub_secrets


if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from huggingface_hub import DatasetCard


logger = logging.getLogger(__name__)

#: Card-data keys that ``push_to_hub`` owns; a regenerated card never overwrites them.
PUSH_OWNED_KEYS = ("configs", "dataset_info")
_CARD_RETRIES = 3

CardFactory = Callable[[str, dict[str, Any]], "DatasetCard"]


def check_online(action: str) -> None:
    """Raise :class:`HubOfflineError` if huggingface_hub or datasets would refuse network calls.

    The one offline check (:func:`xl_suite.utils.hub.offline_reason`): the environment now and the values
    huggingface_hub/datasets read when they were imported.

    Args:
        action: What was about to happen, for the message (e.g. ``"push config 'de' to 'user/xl'"``).

    Raises:
        HubOfflineError: Naming each offline variable that is set and how to unset it.

    Example:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "1"}):
        ...     check_online("push")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xl_suite.errors.HubOfflineError: Cannot push: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE ...
    """
    from xl_suite.utils.hub import OFFLINE_VARIABLES, offline_reason

    reason = offline_reason()
    if reason is None:
        return
    names = [name for name in OFFLINE_VARIABLES if name in reason]
    if names:
        raise HubOfflineError(
            f"Cannot {action}: offline mode is on ({reason}). Unset {' and '.join(names)} (`unset {' '.join(names)}`)"
            " before starting Python: huggingface_hub and datasets read it at import time."
        )
    raise HubOfflineError(f"Cannot {action}: offline mode is on: {reason}.")


def push_config(
    data: Dataset | DatasetDict,
    repo_id: str,
    config_name: str,
    *,
    split: str = "train",
    token: str | None = None,
    private: bool = False,
    card: DatasetCard | CardFactory | None = None,
    commit_message: str | None = None,
    max_shard_size: int | str | None = None,
    files: Mapping[str, bytes] | None = None,
    files_folder: str | None = None,
) -> str:
    """Add or replace one config of a Hub dataset repo, leaving its other configs untouched.

    A ``DatasetDict`` replaces the whole config in one commit: ``DatasetDict.push_to_hub`` deletes the config's
    stale shards, including splits that are no longer there. A ``Dataset`` adds or replaces only the split
    ``split`` of the config (``Dataset.push_to_hub`` semantics); the config's other splits stay.

    If ``card`` is given, the card is regenerated after the data commit: the README that push_to_hub wrote is
    loaded, ``card(repo_id, current_card_data)`` is called (or the ready card used), and the result is pushed with
    its text and metadata (license, language, pretty_name, ...) but with the current ``configs``/``dataset_info``
    (:data:`PUSH_OWNED_KEYS`), so the configs of every language stay loadable. The card commit is pinned to the
    commit it was merged from and redone if another push landed in between.

    Args:
        data: The rows to publish.
        repo_id: ``"namespace/name"`` of the dataset repo; created if missing.
        config_name: The config (subset) to add or replace, e.g. ``"de"``. Its files go under ``<config_name>/``.
        split: The split name when ``data`` is a ``Dataset``. Defaults to ``"train"``; ignored for a ``DatasetDict``.
        token: A Hub token with write access. Defaults to huggingface_hub's resolution (``HF_TOKEN``, then the
            stored login).
        private: Whether a newly created repo is private. Defaults to ``False``; ignored for an existing repo.
        card: ``None`` (default) keeps the README push_to_hub writes; a ``DatasetCard``, or a callable
            ``card(repo_id, card_data: dict) -> DatasetCard`` given the current README's YAML as a dict.
        commit_message: The message of the data commit. Defaults to ``"Upload config <config_name>"``.
        max_shard_size: Passed to push_to_hub (e.g. ``"500MB"``). Defaults to datasets' default.
        files: More files to commit after the data and before the card, repo path -> bytes (the recipe).
        files_folder: A folder the ``files`` replace: its other files are deleted in the same commit.

    Returns:
        The URL of the last commit made (the card commit if a card was pushed, else the data commit).

    Raises:
        HubOfflineError: If an offline-mode variable is set; raised before any network call.
        ValueError: If ``repo_id``, ``config_name`` or ``data`` is invalid (checked before any network call).
        HubPushError: If a Hub call fails, or the card is not a ``DatasetCard`` or contains the token; the message
            names the repo, the config, whether the data was committed, and the fix.
    """
    _validate_target(repo_id, config_name)
    install_secret_filter(logger, extra=[token])
    target = f"config {config_name!r} of dataset repo {repo_id!r}"
    check_online(f"push {target}")

    from datasets import Dataset, DatasetDict

    if not isinstance(data, (Dataset, DatasetDict)):
        raise InvalidArgumentError(f"push_config needs a datasets.Dataset or DatasetDict, got {type(data).__name__}")
    if isinstance(data, DatasetDict) and len(data) == 0:
        raise InvalidArgumentError(f"Cannot push {target}: the DatasetDict has no splits")
    message = commit_message or f"Upload config {config_name}"
    kwargs: dict[str, Any] = {
        "config_name": config_name,
        "commit_message": message,
        "private": private,
        "token": token,
    }
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    splits = list(data) if isinstance(data, DatasetDict) else [split]
    logger.info("Pushing %s (splits: %s)", target, ", ".join(splits))
    try:
        if isinstance(data, DatasetDict):
            commit = data.push_to_hub(repo_id, **kwargs)
        else:
            commit = data.push_to_hub(repo_id, split=split, **kwargs)
    except Exception as err:
        raise HubPushError(_explain(err, target, token, stage="data")) from err
    logger.info("Pushed %s: %s", target, commit.commit_url)
    parent, last_url = commit.oid, str(commit.commit_url)
    if files:
        try:
            parent, last_url = _push_files(repo_id, files, files_folder, token=token, parent=parent, target=target)
        except Exception as err:
            raise HubPushError(
                _explain(err, target, token, stage="files") + f" The data itself was committed: {commit.commit_url}."
            ) from err
    if card is None:
        return last_url
    try:
        card_url = _push_card(repo_id, card, token=token, parent=parent, config_name=config_name)
    except Exception as err:
        raise HubPushError(
            _explain(err, target, token, stage="card") + f" The data itself was committed: {commit.commit_url}."
        ) from err
    logger.info("Pushed the dataset card of %s: %s", repo_id, card_url)
    return card_url


def merge_card(current: dict[str, Any], new_card: DatasetCard) -> DatasetCard:
    """Return a copy of ``new_card`` whose push-owned YAML (:data:`PUSH_OWNED_KEYS`) comes from ``current``.

    Every other key and the Markdown body come from ``new_card``. One config is marked ``default: true``
    (:func:`xl_suite.provenance.mark_default_config`) so that ``load_dataset(repo)`` works without a config name.

    Args:
        current: The card data of the README on the Hub (``DatasetCard.data.to_dict()``).
        new_card: The regenerated card.

    Returns:
        A new ``DatasetCard``; ``new_card`` is not modified.

    Example:
        >>> from huggingface_hub import DatasetCard
        >>> new = DatasetCard("---\\nlicense: mit\\nconfigs: []\\n---\\n# XL\\n")
        >>> merged = merge_card({"configs": [{"config_name": "de"}], "license": "other"}, new)
        >>> merged.data.to_dict()
        {'license': 'mit', 'configs': [{'config_name': 'de', 'default': True}]}
        >>> merged.text
        '# XL\\n'
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from xl_suite.provenance import mark_default_config

    data = new_card.data.to_dict()
    for key in PUSH_OWNED_KEYS:
        if key in current:
            data[key] = current[key]
        else:
            data.pop(key, None)
    if data.get("configs"):
        data["configs"] = mark_default_config(data["configs"])
    merged = DatasetCard(str(new_card))
    merged.data = DatasetCardData(**data)
    return merged


def _push_card(repo_id: str, card: DatasetCard | CardFactory, *, token: str | None, parent: str, config_name: str):
    from huggingface_hub import DatasetCard, HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    secret = _resolved_token(token)
    for attempt in range(1, _CARD_RETRIES + 1):
        readme = hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=parent, token=token)
        current = DatasetCard.load(readme).data.to_dict()
        new_card = card(repo_id, current) if callable(card) else card
        if not isinstance(new_card, DatasetCard):
            raise TypeError(f"The card for {repo_id!r} must be a huggingface_hub.DatasetCard, got {type(new_card)}")
        merged = merge_card(current, new_card)
        if secret and secret in str(merged):
            raise InvalidArgumentError(f"Refusing to push the card of {repo_id!r}: it contains the Hub token.")
        try:
            info = merged.push_to_hub(
                repo_id,
                token=token,
                repo_type="dataset",
                commit_message=f"Update dataset card (config {config_name})",
                parent_commit=parent,
            )
            return str(info)
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status not in (409, 412) or attempt == _CARD_RETRIES:
                raise
            logger.info("The dataset card of %s changed meanwhile (HTTP %s); merging again", repo_id, status)
            parent = HfApi(token=token).repo_info(repo_id, repo_type="dataset").sha
    raise AssertionError("unreachable")  # pragma: no cover


def _push_files(
    repo_id: str, files: Mapping[str, bytes], folder: str | None, *, token: str | None, parent: str, target: str
) -> tuple[str, str]:
    """Commit ``files`` (replacing the other files of ``folder``) on top of ``parent``; returns (oid, url)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    operations: list = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    if folder:
        prefix = folder.rstrip("/") + "/"
        existing = api.list_repo_files(repo_id, repo_type="dataset", revision=parent)
        operations += [
            CommitOperationDelete(path_in_repo=path)
            for path in existing
            if path.startswith(prefix) and path not in files
        ]
    info = api.create_commit(
        repo_id,
        operations,
        commit_message=f"Upload {folder or 'files'} ({target})",
        repo_type="dataset",
        parent_commit=parent,
    )
    logger.info("Pushed %d files of %s: %s", len(files), target, info.commit_url)
    return info.oid, str(info.commit_url)


def _validate_target(repo_id: str, config_name: str) -> None:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InvalidArgumentError(f"repo_id must be 'namespace/name', got {repo_id!r}")
    if not isinstance(config_name, str) or not config_name or "/" in config_name or config_name == "data":
        raise InvalidArgumentError(
            f"config_name must be a non-empty name without '/' and other than 'data' (reserved by datasets), "
            f"got {config_name!r}"
        )


def _resolved_token(token: str | None) -> str | None:
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def _explain(err: Exception, target: str, token: str | None, *, stage: str) -> str:
    """A one-paragraph message: what failed, the underlying error (token-scrubbed) and the fix."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    name = type(err).__name__
    if status in (401, 403) or name in ("RepositoryNotFoundError", "GatedRepoError"):
        fix = (
            "Check that the token (the token argument, HF_TOKEN or `hf auth login`) has write access to the "
            "repo's namespace."
        )
    elif stage == "card":
        fix = "Only the card is stale; rerun push_config to retry it (identical Parquet is not uploaded again)."
    elif (status is not None and status >= 500) or name in ("ConnectError", "ConnectionError", "TimeoutException"):
        fix = (
            "The Hub or the network failed mid-push. No commit was made by this step, so the repo's existing configs "
            "are unchanged; rerun push_config (uploaded Parquet is not uploaded twice)."
        )
    else:
        fix = "Fix the cause above and rerun push_config; the repo's other configs are not affected."
    lines = str(err).strip().splitlines()
    detail = lines[0] if lines else name
    if getattr(err, "server_message", None):
        detail += f"; server said: {err.server_message}"
    try:
        secret = _resolved_token(token)
    except Exception:  # noqa: BLE001 - a broken token store must not hide the original error
        secret = token
    detail = scrub_secrets(detail, extra=[secret, token])
    what = {"data": "the data", "files": "the recipe files"}.get(stage, "the dataset card")
    return f"Pushing {what} of {target} failed ({name}{f', HTTP {status}' if status else ''}: {detail}). {fix}"


def publish_config(
    repo_id: str,
    config_name: str,
    *,
    data=None,
    source: str | None = None,
    from_dir: str | None = None,
    token: str | None = None,
    private: bool = False,
    **config_kwargs,
) -> str:
    """Add or replace ``config_name`` in ``repo_id`` and regenerate the card (the Python side of ``xl-suite push``).

    The data comes from ``data`` (a ``DatasetDict``), or an exported folder (``from_dir``), or the builder
    (``xl_suite.load_xl_suite(config_name, source=source, **config_kwargs)``). It is pushed with
    ``DatasetDict.push_to_hub(config_name=...)`` through :func:`push_config`; the other configs of the
    repo stay as they are. The card is rebuilt from the per-config summaries kept in its YAML plus this config's.

    Nothing private leaves the machine: the rows go through :func:`xl_suite.provenance.public_dataset` (local paths,
    user and host names and credentials removed from the provenance columns; credentials and local paths from the
    rest), the source is named by :func:`~xl_suite.provenance.public_source`, and the card and recipe files are
    checked by :func:`~xl_suite.provenance.check_public` before they are pushed. A synthesized XL-Instruct config
    (``source`` a synthesis output folder with ``summary.json``) gets its recipe pushed to ``recipes/<config>/``
    (:func:`~xl_suite.provenance.build_recipe`) and shown in the card. One config of the repo is marked default.

    Returns:
        URL of the last commit.
    """
    import re

    from xl_suite.cards import config_summary, render_card, summaries_from_yaml
    from xl_suite.datasets_api import parse_config_name
    from xl_suite.provenance import (
        RECIPES_DIR,
        build_recipe,
        check_public,
        mark_default_config,
        private_strings,
        public_dataset,
    )

    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo_id):
        raise InvalidArgumentError(f"REPO_ID must look like 'namespace/name', got {repo_id!r}.")
    parse_config_name(config_name)  # an unknown config or language: the error lists the valid ones
    if from_dir is not None and source is not None:
        raise InvalidArgumentError(
            f"Pass --from-dir or --source, not both (got --from-dir {str(from_dir)!r} and --source {str(source)!r}): "
            "--from-dir takes the config as exported in that folder, --source builds it from that source."
        )
    if from_dir is not None:
        from xl_suite.errors import SourceNotFoundError

        if not Path(from_dir).is_dir():
            raise SourceNotFoundError(f"--from-dir {str(from_dir)!r} is not a folder. Pass an exported folder.")
    check_online(f"push config {config_name!r} to {repo_id!r}")  # fail before building anything
    if data is None:
        if from_dir:
            import datasets

            try:
                data = datasets.load_dataset(str(from_dir), config_name)
            except ValueError as e:  # the folder lacks that config: datasets lists the ones it has
                raise InvalidArgumentError(f"--from-dir {str(from_dir)!r} has no config {config_name!r}: {e}") from e
        else:
            from xl_suite.datasets_api import load_xl_suite

            data = load_xl_suite(config_name, source=source, **config_kwargs)
    private_values = private_strings([source, from_dir])
    private_values["secrets"] = sorted({*private_values["secrets"], *(t for t in [token] if t)}, key=len, reverse=True)
    data = public_dataset(data, private_values)
    files, recipe = None, None
    if parse_config_name(config_name)[0] == "xl-instruct" and source and not from_dir:
        built = build_recipe(config_name, source, storage_options=config_kwargs.get("storage_options"))
        if built is not None:
            files, recipe = built
    elif from_dir and (Path(from_dir) / RECIPES_DIR / config_name).is_dir():  # an export that carries the recipe
        folder = Path(from_dir) / RECIPES_DIR / config_name
        files = {f.relative_to(from_dir).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}
        readme = Path(from_dir) / "README.md"
        if readme.is_file():
            from huggingface_hub import DatasetCard

            recipe = summaries_from_yaml(DatasetCard.load(readme).data.to_dict()).get(config_name, {}).get("recipe")
    for path, content in (files or {}).items():
        check_public(content.decode("utf-8"), f"the recipe file {path}", private_values)
    summary = config_summary(config_name, data, source=source or (str(from_dir) if from_dir else None), recipe=recipe)

    def card(repo, current_yaml):
        summaries = summaries_from_yaml(current_yaml)
        summaries[config_name] = summary
        configs = mark_default_config(current_yaml.get("configs"))
        new = render_card(list(summaries.values()), repo_id=repo, configs_yaml=configs)
        check_public(str(new), f"the dataset card of {repo!r}", private_values)
        return new

    return push_config(
        data,
        repo_id,
        config_name,
        token=token,
        private=private,
        card=card,
        files=files,
        files_folder=f"{RECIPES_DIR}/{config_name}" if files else None,
    )
