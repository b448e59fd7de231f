"""Export XL-Suite configs as a data-only dataset repo (Parquet per config + README ``configs:``).

The folder loads with plain ``datasets.load_dataset(DIR, "xl-alpacaeval-de", split="test")``, and, named
``xl-suite`` in the working directory, with ``load_xl_suite("xl-suite", "xl-alpacaeval-de")``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from xl_suite.errors import InvalidArgumentError, OutputExistsError
from xl_suite.languages import BENCHMARK_LANGUAGES, resolve_languages
from xl_suite.safety import unique_temp_path


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


def _fingerprints(configs: Mapping[str, tuple[object, str | None] | object]) -> dict[str, dict]:
    """config -> {"source": str, "splits": {split: content fingerprint}}: what an export's output depends on."""
    from xl_suite.fingerprint import content_hash, stable_hash

    out = {}
    for name in sorted(configs):
        item = configs[name]
        data, source = item if isinstance(item, tuple) else (item, None)
        out[name] = {  # the source by hash: the marker is uploaded with the folder, a local path is private
            "source": None if source is None else stable_hash("source", str(source))[:16],
            "splits": {split: content_hash(ds)[:16] for split, ds in data.items()},
        }
    return out


def write_repo(
    output_dir: str | Path,
    configs: Mapping[str, tuple[object, str | None] | object],
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Write configs (name -> DatasetDict, or (DatasetDict, source)) as a data-only repo folder.

    The folder is written to a temporary sibling and moved into place at the end, so a failure never leaves a
    half-written repo. The rows go through :func:`xl_suite.provenance.public_dataset` and the card names sources
    without local paths, so the folder can be uploaded as it is; one config is marked ``default: true``. A synthesized
    XL-Instruct config whose source is a synthesis output folder gets its recipe in ``recipes/<config>/``
    (:func:`xl_suite.provenance.build_recipe`), shown in the card.

    The one output rule (:mod:`xl_suite.output_folder`): the export's marker records its configs, their sources and
    a content fingerprint of every split. Writing the same data again is a no-op that says so; other configs or other
    data replace an existing export only with ``overwrite=True``, and only one xl-suite wrote (a folder we did not
    write, the working directory or one of its parents is never touched). Files the user added to an earlier export
    are carried into the new one and named, never deleted. Each Parquet file's name carries its content fingerprint
    (``<config>/<split>-<fingerprint>-00000-of-00001.parquet``), so ``datasets.load_dataset(DIR, config)`` after a
    re-export with other rows builds a new cache entry instead of serving the old rows.

    Args:
        output_dir: the folder.
        configs: config name -> DatasetDict, or (DatasetDict, source).
        overwrite: replace an export of other data or configs.
        repo_id: the repo named in the card (default: the folder's name).
        echo: gets one line when the folder was left unchanged or replaced (default: logged at INFO).

    Raises:
        OutputExistsError: ``output_dir`` exists and may not be replaced (the message says why).
        InvalidArgumentError: no configs.
    """
    from xl_suite.output_folder import OutputClaim, claim_output, settings_hash

    out = _check_output(output_dir)
    if not configs:
        raise InvalidArgumentError("Nothing to export: no configs given.")
    say = echo or logger.info
    settings = {"configs": _fingerprints(configs)}
    try:  # the same rows again are a no-op, with or without overwrite
        claim = claim_output(
            out, "export", settings, overwrite=False, dry_run=True, legacy_markers=LEGACY_MARKERS, flag=_FLAG
        )
    except OutputExistsError:
        if not overwrite:
            raise
        claim = claim_output(
            out, "export", settings, overwrite=True, dry_run=True, legacy_markers=LEGACY_MARKERS, flag=_FLAG
        )
    if claim.mode == "resume" and not (claim.previous or {}).get("settings_hash") and not overwrite:
        raise OutputExistsError(
            f"{str(out)!r} holds an export of an earlier xl-suite release (its configs and rows are not recorded). "
            f"Choose another folder or pass {_FLAG} to replace it."
        )
    if claim.mode == "resume" and claim.finished_before:
        say(f"{out}: unchanged (the same {len(configs)} configs with the same rows are exported there already).")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        files = _write_configs(tmp, configs, settings["configs"], out, repo_id)
        old = None
        if out.is_dir() and not out.is_symlink():
            # checked again here, after the work: the folder may have changed meanwhile
            claim = claim_output(
                out, "export", settings, overwrite=overwrite, dry_run=True, legacy_markers=LEGACY_MARKERS, flag=_FLAG
            )
            for name in claim.kept:  # the user's own files stay with the export
                shutil.move(str(out / name), str(tmp / name))
            old = Path(unique_temp_path(out.resolve(), suffix="-old"))
            out.rename(old)  # the old export leaves in one step; deleted only once the new one is in place
        OutputClaim(tmp, "export", settings, settings_hash("export", settings), "new", files=files).complete()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        line = f"{out}: replaced the earlier export"
        if claim.kept:
            line += f"; kept {len(claim.kept)} files you added: {', '.join(claim.kept[:5])}"
        say(line + ".")
    logger.info("Exported %d configs to %s", len(configs), out)
    return out


_FLAG = "--overwrite/overwrite=True"


def _write_configs(tmp: Path, configs, fingerprints: dict, out: Path, repo_id: str | None) -> list[str]:
    """Write the Parquet files, recipes and card into ``tmp``; return the files written (relative)."""
    from xl_suite.cards import config_summary, render_card
    from xl_suite.provenance import build_recipe, mark_default_config, private_strings, public_dataset

    private = private_strings([out])
    written: list[str] = ["README.md"]
    yaml_configs, summaries = [], []
    families: dict[str, list[str]] = {}
    for name in sorted(configs):
        item = configs[name]
        data, source = item if isinstance(item, tuple) else (item, None)
        data = public_dataset(data, {**private, "paths": private_strings([source])["paths"] + private["paths"]})
        files = []
        for split, ds in data.items():
            fp = fingerprints[name]["splits"][split]
            rel = f"{name}/{split}-{fp}-00000-of-00001.parquet"
            (tmp / name).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(tmp / rel))
            written.append(rel)
            files.append({"split": split, "path": f"{name}/{split}-{fp}-*.parquet"})
        yaml_configs.append({"config_name": name, "data_files": files})
        recipe = None
        if name.startswith("xl-instruct-") and source and os.path.isdir(source):  # a synthesis output folder
            built = build_recipe(name, source)
            if built is not None:
                recipe_files, recipe = built
                for rel, content in recipe_files.items():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(content)
                    written.append(rel)
        summaries.append(config_summary(name, data, source=source, recipe=recipe))
        family = name.rsplit("-", 1)[0]
        families.setdefault(family, []).append(name)
    for family, names in sorted(families.items()):
        if len(names) > 1 and f"{family}-all" not in configs:
            by_name = {c["config_name"]: c["data_files"] for c in yaml_configs}
            splits = sorted({s["split"] for n in names for s in by_name[n]})
            yaml_configs.append(
                {
                    "config_name": f"{family}-all",
                    "data_files": [
                        {
                            "split": sp,
                            "path": [f["path"] for n in sorted(names) for f in by_name[n] if f["split"] == sp],
                        }
                        for sp in splits
                    ],
                }
            )
    yaml_configs = mark_default_config(yaml_configs)  # load_dataset(DIR) works without a config name
    card = render_card(summaries, repo_id=repo_id or out.name, configs_yaml=yaml_configs)
    (tmp / "README.md").write_text(str(card), encoding="utf-8")
    return written


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
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Build the benchmark configs for ``languages`` (plus ``extra`` configs) and write them as a data-only repo.

    Args:
        output_dir: folder to create (refused if it exists, unless ``overwrite``).
        languages: target language codes.
        alpaca_eval: AlpacaEval prompts file (default: the alpaca_eval data on the Hub).
        m_alpacaeval: folder/file of the translated prompts, to add ``m-alpacaeval-<lang>`` configs.
        xl_instruct: folder/file of XL-Instruct data (authors' release or a synthesis run).
        extra: more configs, name -> DatasetDict (e.g. synthesized data or generated references).
        overwrite: replace an export of other configs or data (the same data again is a no-op).
        cache_dir: datasets cache.
        echo: gets one line when the folder was left unchanged or replaced.
    """
    out = _check_output(output_dir)
    if out.exists():  # refuse a folder xl-suite did not write before doing any work
        from xl_suite.output_folder import claim_output

        claim_output(out, "export", {}, overwrite=True, dry_run=True, legacy_markers=LEGACY_MARKERS, flag=_FLAG)
    configs: dict[str, object] = dict(
        benchmark_configs(
            languages, alpaca_eval=alpaca_eval, m_alpacaeval=m_alpacaeval, xl_instruct=xl_instruct, cache_dir=cache_dir
        )
    )
    for name, data in (extra or {}).items():
        configs[name] = data
    return write_repo(out, configs, overwrite=overwrite, echo=echo)
