"""Dataset cards rendered from ``dataset_cards/*.md.jinja`` with every number taken from the data.

The card is a :class:`huggingface_hub.DatasetCard`. We render the Jinja template ourselves with ``StrictUndefined``
(``DatasetCard.from_template`` uses Jinja's lenient default, which would print a misspelt variable as nothing) and
build the card from the rendered text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources

from xl_suite.errors import InvalidArgumentError
from xl_suite.languages import get_language
from xl_suite.prompting import TemplateError


__all__ = ["config_summary", "render_card", "LICENSES", "summaries_from_yaml", "SUMMARY_KEY"]

#: Where the per-config summaries are kept in the card's YAML so later pushes can rebuild the whole card.
SUMMARY_KEY = "xl_suite_configs"

LICENSES = {
    "xl-alpacaeval": ("cc-by-nc-4.0", "XL-AlpacaEval is derived from AlpacaEval (data CC BY-NC 4.0, Li et al. 2023)."),
    "m-alpacaeval": ("cc-by-nc-4.0", "m-AlpacaEval is derived from AlpacaEval (data CC BY-NC 4.0)."),
    "xl-instruct": (
        "cc-by-sa-4.0",
        "The authors' XL-Instruct release is CC BY-SA 4.0; synthesized data follows the "
        "terms of the seed corpus and of the generating model.",
    ),
}

_PROVENANCE_COLUMNS = (
    "request_template",
    "reference_generator",
    "model",
    "revision",
    "template_version",
    "translator",
    "origin",
    "generator",
)


def _card_template(name: str = "xl_suite.md.jinja") -> str:
    res = resources.files("xl_suite.dataset_cards") / name
    if not res.is_file():
        raise TemplateError(f"Card template {name!r} not found in dataset_cards/.")
    return res.read_text(encoding="utf-8")


def config_summary(name: str, data, *, source: str | None = None, recipe: Mapping | None = None) -> dict:
    """Summarise one config from its data: rows per split, language, and provenance values found in the columns.

    Args:
        name: config name (``xl-alpacaeval-de``).
        data: a ``DatasetDict`` (or mapping split -> Dataset).
        source: where the data came from; recorded as :func:`xl_suite.provenance.public_source` names it (a URL or
            ``local file <name>``, never a local path).
        recipe: what the card shows of the config's recipe (:func:`xl_suite.provenance.build_recipe`), if any.
    """
    from xl_suite.datasets_api import parse_config_name
    from xl_suite.provenance import public_source

    family, variant, lang = parse_config_name(name)
    splits = {split: int(ds.num_rows) for split, ds in data.items()}
    provenance: dict[str, list[str]] = {}
    for ds in data.values():
        columns = {col: ds.unique(col) for col in _PROVENANCE_COLUMNS if col in ds.column_names}
        if "provenance" in ds.column_names:  # a synthesized config: the typed struct's model, revision, template
            import pyarrow as pa
            import pyarrow.compute as pc

            struct = ds.with_format("arrow")[:].column("provenance")  # Arrow, not Python dicts of every row
            for key in ("model", "revision", "template_version"):
                values = pa.chunked_array([chunk.field(key) for chunk in struct.chunks], pa.string())
                columns.setdefault(key, pc.unique(values).to_pylist())
        for col, values in columns.items():
            vals = sorted({str(v) for v in values if v not in (None, "")})
            if vals:
                provenance.setdefault(col, [])
                provenance[col] = sorted(set(provenance[col]) | set(vals))[:5]
    languages = sorted(
        {code for ds in data.values() if "language" in ds.column_names for code in ds.unique("language")}
    )
    fields = {}
    for ds in data.values():
        fields.update({k: str(v.dtype) if hasattr(v, "dtype") else type(v).__name__ for k, v in ds.features.items()})
    return {
        "name": name,
        "family": family,
        "variant": variant,
        "language": lang,
        "languages": languages,
        "splits": splits,
        "source": public_source(source),
        "provenance": provenance,
        "fields": fields,
        "recipe": dict(recipe) if recipe else None,
    }


def _provenance_text(summary: Mapping) -> str:
    parts = [f"source `{summary['source']}`"] if summary.get("source") else []
    for key, vals in summary.get("provenance", {}).items():
        parts.append(f"{key}: " + ", ".join(f"`{v}`" for v in vals))
    return "; ".join(parts) if parts else "not recorded"


def summaries_from_yaml(card_yaml: Mapping | None) -> dict[str, dict]:
    """Per-config summaries stored in an existing card's YAML (by an earlier push).

    A ``source`` that an older xl-suite stored as a local path is renamed as :func:`xl_suite.provenance.public_source`
    names it.
    """
    from xl_suite.provenance import public_source

    stored = (card_yaml or {}).get(SUMMARY_KEY) or []
    out = {}
    for s in stored:
        s = {**dict(s), "recipe": s.get("recipe")}
        if s.get("source") and not str(s["source"]).startswith(("local ", "hf://", "http")):
            s["source"] = public_source(s["source"])
        out[s["name"]] = s
    return out


def render_card(
    summaries: list[dict],
    *,
    repo_id: str = "xl-suite",
    configs_yaml: list | None = None,
    extra_yaml: Mapping | None = None,
):
    """Render the XL-Suite dataset card for the given config summaries.

    Args:
        summaries: :func:`config_summary` results, one per config.
        repo_id: repo id or folder name shown in the usage snippet.
        configs_yaml: the ``configs:`` entries (data files per config) to put in the YAML header.
        extra_yaml: other YAML keys to keep (e.g. ``dataset_info`` written by ``push_to_hub``).

    Returns:
        huggingface_hub.DatasetCard
    """
    import jinja2
    from huggingface_hub import DatasetCard, DatasetCardData

    from xl_suite import __version__
    from xl_suite.constants import CITATION
    from xl_suite.sources import alpaca_eval_exclusions, exclusion_rule

    if not summaries:
        raise InvalidArgumentError("A card needs at least one config summary.")
    summaries = sorted(summaries, key=lambda s: s["name"])
    families = sorted({s["family"] for s in summaries}, key=["xl-alpacaeval", "m-alpacaeval", "xl-instruct"].index)
    codes = sorted(
        {c for s in summaries for c in (s["languages"] or ([s["language"]] if s["language"] != "all" else []))}
    )
    languages = [get_language(c) for c in codes]
    fields = {}
    for s in summaries:
        fields.setdefault(s["family"], {}).update(s["fields"])
    request_templates = sorted({t for s in summaries for t in s["provenance"].get("request_template", [])})
    xl = [s for s in summaries if s["family"] == "xl-alpacaeval" and s["language"] != "all"]
    n_kept = xl[0]["splits"].get("test", 0) if xl else 0
    excluded = alpaca_eval_exclusions()
    licenses = [{"name": LICENSES[f][0], "text": LICENSES[f][1]} for f in families]
    lic_ids = sorted({lic["name"] for lic in licenses})
    stored = [dict(s) for s in summaries]
    card_data = DatasetCardData(
        language=codes + (["en"] if "en" not in codes else []),
        license=lic_ids[0] if len(lic_ids) == 1 else lic_ids,
        multilinguality="multilingual",
        task_categories=["text-generation"],
        pretty_name="XL-Suite",
        source_datasets=["tatsu-lab/alpaca_eval"] if "xl-alpacaeval" in families else None,
        configs=configs_yaml,
        **{SUMMARY_KEY: json.loads(json.dumps(stored))},
        **dict(extra_yaml or {}),
    )
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    configs = [dict(s, provenance_text=_provenance_text(s)) for s in summaries]
    recipes = [dict(s["recipe"], name=s["name"]) for s in summaries if s.get("recipe")]
    default = next((c["config_name"] for c in configs_yaml or [] if c.get("default")), None)
    try:
        text = env.from_string(_card_template()).render(
            card_data=card_data.to_yaml(),
            xl_suite_version=__version__,
            families=families,
            n_kept=n_kept,
            n_source=n_kept + len(excluded),
            excluded=excluded,
            exclusion_rule=exclusion_rule(),
            languages=languages,
            configs=configs,
            repo_id=repo_id,
            fields=fields,
            request_templates=request_templates,
            recipes=recipes,
            default_config=default,
            licenses=licenses,
            citation=CITATION.strip(),
        )
    except jinja2.UndefinedError as e:
        raise TemplateError(f"Card template uses an undefined variable: {e.message}") from e
    return DatasetCard(text)
