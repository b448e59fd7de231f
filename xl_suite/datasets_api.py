"""``xl_suite.load_xl_suite``: build any XL-Suite config through its builder, with the normal datasets cache.

``xl_suite.load_dataset`` was its name until 0.1; it takes a config name, not ``datasets.load_dataset``'s
``(path, name)``, so it is renamed. The old name stays for one release as an alias that warns (``FutureWarning``).
"""

from __future__ import annotations

import contextlib
import errno
import re
import warnings

from xl_suite.errors import CacheError, InvalidArgumentError
from xl_suite.languages import get_language, language_fingerprint, list_languages


__all__ = [
    "load_xl_suite",
    "load_dataset",
    "list_configs",
    "get_builder",
    "check_source_language",
    "parse_config_name",
    "language_fingerprint",
    "source_fingerprint",
]

# The language part is a registry code in config form: lower-case BCP-47 (``de``, ``pt-br``, ``zh-hant``).
_NAME_RE = re.compile(
    r"^(xl-alpacaeval|m-alpacaeval|xl-instruct)(?:-(bestof3|scored))?-([a-z]{2,3}(?:-[a-z]{4})?(?:-[a-z]{2}|-[0-9]{3})?|all)$"
)


def list_configs() -> list[str]:
    """Names of the built-in configs (languages registered by the user work too, e.g. ``xl-alpacaeval-sw``)."""
    from xl_suite.builders import BUILDERS

    return [c.name for b in BUILDERS.values() for c in b.BUILDER_CONFIGS]


def parse_config_name(name: str) -> tuple[str, str, str]:
    """Split a config name into (family, variant, language).

    >>> parse_config_name("xl-instruct-bestof3-mt")
    ('xl-instruct', 'bestof3', 'mt')
    >>> parse_config_name("xl-alpacaeval-de")
    ('xl-alpacaeval', 'default', 'de')
    """
    m = _NAME_RE.match(name or "")
    if not m:
        raise InvalidArgumentError(
            f"Config {name!r} does not exist. Valid configs: {list_configs()}; a user-registered language "
            f"(known now: {[s.code for s in list_languages()]}) works in place of the code, e.g. 'xl-alpacaeval-sw'."
        )
    family, variant, lang = m.group(1), m.group(2) or "default", m.group(3)
    if variant != "default" and family != "xl-instruct":
        raise InvalidArgumentError(
            f"Config {name!r}: variants ({variant}) exist only for xl-instruct. Valid: {list_configs()}"
        )
    if lang != "all":
        get_language(lang)  # unknown language -> error listing the known ones and how to add one
    return family, variant, lang


def get_builder(config_name: str, *, cache_dir: str | None = None, **config_kwargs):
    """Instantiate the builder for ``config_name`` (not prepared yet).

    Built-in config names select a ``BUILDER_CONFIGS`` entry; a user-registered language gets a config made on the
    fly with the same name pattern.
    """
    from xl_suite.builders import BUILDERS

    family, variant, lang = parse_config_name(config_name)
    builder_cls = BUILDERS[family]
    names = {c.name for c in builder_cls.BUILDER_CONFIGS}
    kwargs = {k: v for k, v in config_kwargs.items() if v is not None}
    if kwargs.get("source") and "source_version" not in kwargs:
        kwargs["source_version"] = source_fingerprint(kwargs["source"], kwargs.get("storage_options"))
    if "language_version" not in kwargs:
        version = language_fingerprint([lang] if lang != "all" else kwargs.get("languages") or ())
        if version:  # only a language that is not built in changes the config id (and so the cache folder)
            kwargs["language_version"] = version
    if config_name not in names and lang == "all":
        raise InvalidArgumentError(f"Config {config_name!r} does not exist. Valid configs: {list_configs()}")
    with _writable_cache(cache_dir):
        if config_name in names:
            builder = builder_cls(config_name=config_name, cache_dir=cache_dir, **kwargs)
        else:
            builder = builder_cls(
                cache_dir=cache_dir, name=config_name, language=lang, variant=variant, family=family, **kwargs
            )
    builder.config.validate()  # datasets applies overrides with setattr, bypassing __post_init__
    return builder


@contextlib.contextmanager
def _writable_cache(cache_dir: str | None):
    """Turn "cannot write the datasets cache" (a read-only HF_HOME, a full disk) into one error naming the fix."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC) or isinstance(e, FileNotFoundError):
            raise
        where = e.filename or cache_dir or "the datasets cache"
        how = (
            "pass a writable cache_dir="
            if cache_dir
            else "set HF_DATASETS_CACHE (or HF_HOME) to a writable folder, or pass cache_dir= in Python"
        )
        raise CacheError(f"Cannot write the datasets cache {str(where)!r} ({e.strerror}): {how}.") from None


def source_fingerprint(source: str, storage_options: dict | None = None) -> str:
    """Fingerprint of a source file or folder (names, sizes, modification times), for cache keys.

    Remote sources that cannot be listed get an empty fingerprint; reading them later fails with a clear error.
    """
    import fsspec

    from xl_suite.fingerprint import stable_hash

    try:
        fs, path = fsspec.core.url_to_fs(str(source), **(storage_options or {}))
        if fs.isdir(path):
            entries = [e for e in fs.ls(path, detail=True) if not e["name"].rsplit("/", 1)[-1].startswith(".")]
        else:
            entries = [fs.info(path)]
    except Exception:  # offline Hub, permissions...: the read itself reports the problem
        return ""
    keys = sorted(
        (
            e["name"],
            e.get("size"),
            str(
                e.get("mtime")
                or e.get("LastModified")
                or e.get("last_commit")
                or e.get("ETag")
                or e.get("created")
                or ""
            ),
        )
        for e in entries
    )
    return stable_hash(keys)


def load_xl_suite(
    config_name: str,
    *,
    split: str | None = None,
    cache_dir: str | None = None,
    check_language: bool = True,
    **config_kwargs,
):
    """Load an XL-Suite config (``xl-alpacaeval-de``, ``m-alpacaeval-mt``, ``xl-instruct-bestof3-hi``...).

    Args:
        config_name: the config; see :func:`list_configs`.
        split: return one split (``"test"`` for the benchmarks, ``"train"`` for XL-Instruct) instead of the dict.
        cache_dir: datasets cache folder (default: ``HF_DATASETS_CACHE``).
        check_language: for the target-language families (``m-alpacaeval-*`` instructions, ``xl-instruct-*``
            responses), refuse a source whose texts are confidently in another language (an English AlpacaEval file
            given as the source of ``m-alpacaeval-de``): :func:`check_source_language`. False skips the check.
        **config_kwargs: :class:`xl_suite.builders.XlSuiteConfig` fields, e.g. ``source="alpaca_eval.json"``,
            ``column_mapping={"response": "target"}``, ``languages=("de", "mt")`` for an ``-all`` config.

    Returns:
        ``datasets.DatasetDict``, or a ``datasets.Dataset`` when ``split`` is given.

    Raises:
        SourceError: the source cannot be read, holds no rows for the config, or (``check_language``) is in
            another language than the config's.
    """
    from datasets.exceptions import DatasetGenerationError

    from xl_suite.sources import SourceError

    builder = get_builder(config_name, cache_dir=cache_dir, **config_kwargs)
    try:
        with _writable_cache(cache_dir):
            builder.download_and_prepare()
    except DatasetGenerationError as e:
        # datasets wraps errors raised while generating; surface our own clear source errors as they are.
        cause = e.__cause__
        while cause is not None and not isinstance(cause, SourceError):
            cause = cause.__cause__
        if cause is not None:
            raise SourceError(f"{config_name}: {cause}") from e
        raise
    try:
        data = builder.as_dataset(split=split)
    except ValueError as e:
        if "corresponds to no data" not in str(e):
            raise
        raise SourceError(
            f"{config_name}: the source {builder.config.source or '(default)'!r} holds no rows for this config "
            "(for a synthesis run: no pair survived for this language; see its summary.json)."
        ) from e
    if check_language:
        check_source_language(config_name, data, source=builder.config.source)
    return data


#: Per family, the column whose text must be in the config's language.
_TARGET_COLUMNS = {"m-alpacaeval": "instruction", "xl-instruct": "response"}


def check_source_language(config_name: str, data, *, source=None, share: float = 0.6, min_prob: float = 0.8) -> None:
    """Refuse a target-language config whose texts are confidently in one other language (issue: an English file
    accepted as the source of ``m-alpacaeval-de`` or ``xl-instruct-de``).

    Rows are checked per language (``-all`` configs too). A language is refused when at least ``share`` of its rows
    are identified, with probability >= ``min_prob``, as one and the same other language (not a relative the
    fidelity score accepts). Text in no language (a stand-in model's) or a language no identifier knows passes:
    only a confident, consistent other language is an error.

    Raises:
        SourceError: naming the config, the language found and the fix.
    """
    from collections import Counter

    from xl_suite.fidelity import language_fidelity
    from xl_suite.sources import SourceError
    from xl_suite.status import RowStatus

    family, _, _ = parse_config_name(config_name)
    column = _TARGET_COLUMNS.get(family)
    if column is None:
        return
    parts = data.values() if hasattr(data, "values") and not hasattr(data, "column_names") else [data]
    texts, langs = [], []
    for part in parts:
        if column not in part.column_names or "language" not in part.column_names:
            continue
        texts += [t or "" for t in part[column]]
        langs += list(part["language"])
    if not texts:
        return
    fid = language_fidelity(texts, langs)
    by_language: dict[str, list[int]] = {}
    for i, lang in enumerate(langs):
        by_language.setdefault(get_language(lang).code, []).append(i)
    for code, rows in by_language.items():
        if fid["per_language"].get(code, {}).get("status") == RowStatus.NOT_APPLICABLE:
            continue  # no identifier knows the language: nothing to say
        wrong = Counter(
            fid["detected_language"][i]
            for i in rows
            if fid["is_target"][i] is False and float(fid["detected_prob"][i] or 0) >= min_prob
        )
        if not wrong:
            continue
        other, n = wrong.most_common(1)[0]
        if n < share * len(rows):
            continue
        target = get_language(code).display_name
        fix = (
            "its source must hold the prompts translated into the language (xl-suite translate writes them)"
            if family == "m-alpacaeval"
            else "its source must hold responses in the language (a synthesis output or the authors' release)"
        )
        raise SourceError(
            f"{config_name}: {n} of {len(rows)} {column}s of {source or 'the source'!r} are in {other!r}, not "
            f"{target}: {fix}. Pass check_language=False to load it anyway."
        )


def load_dataset(config_name: str, *, split: str | None = None, cache_dir: str | None = None, **config_kwargs):
    """Deprecated alias of :func:`load_xl_suite` (removed in the next release).

    It shadowed ``datasets.load_dataset(path, name)`` with another signature; the new name says what it loads.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = load_dataset("no-such-config")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    xl_suite.errors.InvalidArgumentError: Config 'no-such-config' does not exist.
    >>> str(caught[0].message)[:95]
    'xl_suite.load_dataset is deprecated and will be removed in the next release: use xl_suite.load_'
    """
    warnings.warn(
        "xl_suite.load_dataset is deprecated and will be removed in the next release: use "
        "xl_suite.load_xl_suite(config_name, ...) (same arguments). It was renamed because it is not "
        "datasets.load_dataset(path, name).",
        FutureWarning,
        stacklevel=2,
    )
    return load_xl_suite(config_name, split=split, cache_dir=cache_dir, **config_kwargs)
