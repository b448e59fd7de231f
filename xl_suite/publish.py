"""Publish one config to a Hub dataset repo and regenerate the repo's dataset card from the data."""

from __future__ import annotations

import logging


logger = logging.getLogger(__name__)

__all__ = ["publish_config"]


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
    (``xl_suite.load_dataset(config_name, source=source, **config_kwargs)``). It is pushed with
    ``DatasetDict.push_to_hub(config_name=...)`` through :func:`xl_suite.hub.push_config`; the other configs of the
    repo stay as they are. The card is rebuilt from the per-config summaries kept in its YAML plus this config's.

    Returns:
        URL of the last commit.
    """
    from xl_suite.cards import config_summary, render_card, summaries_from_yaml
    from xl_suite.hub import check_online, push_config

    check_online(f"push config {config_name!r} to {repo_id!r}")  # fail before building anything
    if data is None:
        if from_dir:
            import datasets

            data = datasets.load_dataset(str(from_dir), config_name)
        else:
            from xl_suite.datasets_api import load_dataset

            data = load_dataset(config_name, source=source, **config_kwargs)
    summary = config_summary(config_name, data, source=source or (str(from_dir) if from_dir else None))

    def card(repo, current_yaml):
        summaries = summaries_from_yaml(current_yaml)
        summaries[config_name] = summary
        return render_card(list(summaries.values()), repo_id=repo)

    return push_config(data, repo_id, config_name, token=token, private=private, card=card)
