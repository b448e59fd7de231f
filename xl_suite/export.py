"""Export XL-Suite configs as a data-only dataset repo (Parquet per config + README ``configs:``).

The folder loads with plain ``datasets.load_dataset(DIR, "xl-alpacaeval-de", split="test")``, and, named
``xl-suite`` in the working directory, with ``load_xl_suite("xl-suite", "xl-alpacaeval-de")``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from xl_suite.errors import InvalidArgumentError
from xl_suite.languages import BENCHMARK_LANGUAGES, resolve_languages
from xl_suite.safety import check_replaceable, unique_temp_path, write_marker


logger = logging.getLogger(__name__)

__all__ = ["export_repo", "write_repo", "benchmark_configs", "LEGACY_MARKERS"]

#: Marker files of earlier releases that also prove a folder was written by xl-suite (the demo's export marker).
LEGACY_MARKERS = (".xl-suite-demo",)


def _check_output(output_dir) -> Path:
    """The export folder, checked: a non-empty name whose parent can be written to."""
    from xl_suite.safety import check_output_dir

    if not str(output_dir or "").strip():
        raise InvalidArgumentError(f"The export folder must be named (DIR), got {output_dir!r}; e.g. xl-suite.")
    out = Path(output_dir)
    if out.is_dir() or not out.exists():  # an existing file is refused by check_replaceable
        check_output_dir(out, "DIR")
    return out


def benchmark_configs(
    languages: Sequence[str] | str = BENCHMARK_LANGUAGES,
    *,
    alpaca_eval: str | None = None,
    m_alpacaeval: str | None = None,
    xl_instruct: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, tuple[object, str | None]]:
    """Build the configs to export: ``xl-alpacaeval-<lang>`` always, the others when their source is given.

    Returns:
        config name -> (DatasetDict, source).
    """
    from xl_suite.datasets_api import load_xl_suite
    from xl_suite.sources import DEFAULT_ALPACA_EVAL_SOURCE

    specs = resolve_languages(languages)
    out: dict[str, tuple[object, str | None]] = {}
    src = alpaca_eval or DEFAULT_ALPACA_EVAL_SOURCE
    for spec in specs:
        out[f"xl-alpacaeval-{spec.code}"] = (
            load_xl_suite(f"xl-alpacaeval-{spec.code}", source=src, cache_dir=cache_dir),
            src,
        )
    for family, source in (("m-alpacaeval", m_alpacaeval), ("xl-instruct", xl_instruct)):
        if source:
            for spec in specs:
                name = f"{family}-{spec.code}"
                out[name] = (load_xl_suite(name, source=source, cache_dir=cache_dir), source)
    return out


def write_repo(
    output_dir: str | Path,
    configs: Mapping[str, tuple[object, str | None] | object],
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
) -> Path:
    """Write configs (name -> DatasetDict, or (DatasetDict, source)) as a data-only repo folder.

    The folder is written to a temporary sibling and moved into place at the end, so a failure never leaves a
    half-written repo. The rows go through :func:`xl_suite.provenance.public_dataset` and the card names sources
    without local paths, so the folder can be uploaded as it is; one config is marked ``default: true``. A synthesized
    XL-Instruct config whose source is a synthesis output folder gets its recipe in ``recipes/<config>/``
    (:func:`xl_suite.provenance.build_recipe`), shown in the card. An existing
    folder is only replaced when ``overwrite=True`` *and* it holds xl-suite's marker
    file (:data:`xl_suite.safety.MARKER_FILE`, written into every export): a folder we did not write, the working
    directory or one of its parents is never deleted.

    Raises:
        OutputExistsError: ``output_dir`` exists and may not be replaced (the message says why).
        InvalidArgumentError: no configs.
    """
    from xl_suite.cards import config_summary, render_card
    from xl_suite.provenance import build_recipe, mark_default_config, private_strings, public_dataset

    out = _check_output(output_dir)
    replace = check_replaceable(out, overwrite=overwrite, legacy_markers=LEGACY_MARKERS)
    if not configs:
        raise InvalidArgumentError("Nothing to export: no configs given.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    private = private_strings([out])
    try:
        yaml_configs, summaries = [], []
        families: dict[str, list[str]] = {}
        for name in sorted(configs):
            item = configs[name]
            data, source = item if isinstance(item, tuple) else (item, None)
            data = public_dataset(data, {**private, "paths": private_strings([source])["paths"] + private["paths"]})
            files = []
            for split, ds in data.items():
                rel = f"{name}/{split}-00000-of-00001.parquet"
                (tmp / name).mkdir(parents=True, exist_ok=True)
                ds.to_parquet(str(tmp / rel))
                files.append({"split": split, "path": f"{name}/{split}-*.parquet"})
            yaml_configs.append({"config_name": name, "data_files": files})
            recipe = None
            if name.startswith("xl-instruct-") and source and os.path.isdir(source):  # a synthesis output folder
                built = build_recipe(name, source)
                if built is not None:
                    recipe_files, recipe = built
                    for rel, content in recipe_files.items():
                        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                        (tmp / rel).write_bytes(content)
            summaries.append(config_summary(name, data, source=source, recipe=recipe))
            family = name.rsplit("-", 1)[0]
            families.setdefault(family, []).append(name)
        for family, names in sorted(families.items()):
            if len(names) > 1 and f"{family}-all" not in configs:
                splits = sorted(
                    {s["split"] for c in yaml_configs if c["config_name"] in names for s in c["data_files"]}
                )
                yaml_configs.append(
                    {
                        "config_name": f"{family}-all",
                        "data_files": [
                            {"split": sp, "path": [f"{n}/{sp}-*.parquet" for n in sorted(names)]} for sp in splits
                        ],
                    }
                )
        yaml_configs = mark_default_config(yaml_configs)  # load_dataset(DIR) works without a config name
        card = render_card(summaries, repo_id=repo_id or out.name, configs_yaml=yaml_configs)
        (tmp / "README.md").write_text(str(card), encoding="utf-8")
        write_marker(tmp, "export")
        old = None
        if out.is_dir() and not out.is_symlink():
            if replace:
                check_replaceable(out, overwrite=overwrite, legacy_markers=LEGACY_MARKERS)  # unchanged meanwhile?
            old = Path(unique_temp_path(out.resolve(), suffix="-old"))
            out.rename(old)  # the old export leaves in one step; deleted only once the new one is in place
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("Exported %d configs to %s", len(configs), out)
    return out


def export_repo(
    output_dir: str | Path,
    *,
    languages: Sequence[str] | str = BENCHMARK_LANGUAGES,
    alpaca_eval: str | None = None,
    m_alpacaeval: str | None = None,
    xl_instruct: str | None = None,
    extra: Mapping[str, object] | None = None,
    overwrite: bool = False,
    cache_dir: str | None = None,
) -> Path:
    """Build the benchmark configs for ``languages`` (plus ``extra`` configs) and write them as a data-only repo.

    Args:
        output_dir: folder to create (refused if it exists, unless ``overwrite``).
        languages: target language codes.
        alpaca_eval: AlpacaEval prompts file (default: the alpaca_eval data on the Hub).
        m_alpacaeval: folder/file of the translated prompts, to add ``m-alpacaeval-<lang>`` configs.
        xl_instruct: folder/file of XL-Instruct data (authors' release or a synthesis run).
        extra: more configs, name -> DatasetDict (e.g. synthesized data or generated references).
        overwrite: replace an existing folder.
        cache_dir: datasets cache.
    """
    out = _check_output(output_dir)
    check_replaceable(out, overwrite=overwrite, legacy_markers=LEGACY_MARKERS)  # refuse before doing any work
    configs: dict[str, object] = dict(
        benchmark_configs(
            languages, alpaca_eval=alpaca_eval, m_alpacaeval=m_alpacaeval, xl_instruct=xl_instruct, cache_dir=cache_dir
        )
    )
    for name, data in (extra or {}).items():
        configs[name] = data
    return write_repo(out, configs, overwrite=overwrite)
