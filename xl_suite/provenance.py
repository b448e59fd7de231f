"""Provenance that survives publishing, with nothing private in it.

* :func:`provenance_features` and :func:`synthesis_provenance`: the typed ``provenance`` struct column of XL-Instruct
  rows made by ``xl-suite synthesize`` (models, revisions, template versions, sampling, scores, raw completions per
  stage). It loads with plain ``datasets`` as a struct: ``row["provenance"]["model"]``,
  ``row["provenance"]["stages"][0]["sampling"]["temperature"]``.
* :func:`public_text`, :func:`public_source` and :func:`public_dataset`: what may leave the machine. Credentials
  (:func:`xl_suite.safety.scrub_secrets`), local paths, the user name and the host name are removed from provenance
  fields, cards and recipe files; from the data's text columns (instructions, answers) only credentials and the known
  local paths (home, working and source folders) are removed, since a user name such as ``root`` is also a word.
  :func:`check_public` refuses a card or file that still holds one of them.
* :func:`build_recipe`: the recipe pushed beside a synthesized config (``recipes/<config>/config.yaml``, the
  templates, ``summary.json``), rerunnable with ``xl-suite synthesize --config-file recipes/<config>/config.yaml``.
* :func:`mark_default_config`: the ``default: true`` config of a repo's README, so ``load_dataset(repo)`` works.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.safety import scrub_secrets, secret_values


logger = logging.getLogger(__name__)

__all__ = [
    "provenance_features",
    "RECIPES_DIR",
    "SYNTHESIS_ORIGIN",
    "build_recipe",
    "check_public",
    "mark_default_config",
    "private_strings",
    "public_dataset",
    "public_source",
    "public_text",
    "synthesis_provenance",
]

#: Folder of the recipes in a published repo.
RECIPES_DIR = "recipes"
#: ``origin`` of rows made by ``xl-suite synthesize``.
SYNTHESIS_ORIGIN = "xl-suite synthesize"
#: Columns whose strings are provenance (paths, user and host names are removed from them, not only credentials).
PROVENANCE_COLUMNS = (
    "origin",
    "provenance",
    "request_template",
    "reference_generator",
    "translator",
    "model",
    "revision",
    "template_version",
    "generator",
)
_STAGE_PREFIXES = ("backtranslate", "refine", "score", "respond", "judge")
#: Keys of the provenance struct that hold generated text (treated like the data's text columns).
_TEXT_KEYS = frozenset({"raw_completions", "candidates", "english_response", "seed_text"})
_LOCAL = "<local>"
# Shorter user/host names ("vm", "root", "user") are too generic to identify anyone and are ordinary words of
# generated text and cards; inside a path they go with the path.
_MIN_NAME_LEN = 6
# an absolute local path (or ~/..., file://...) not preceded by a word character, ':' or '/' (so URLs stay)
_PATH_RE = re.compile(r"(?<![\w:/.~>-])(?:file://)?(?:~|/)[^\s'\"<>|,;()\[\]{}`*]*")
_REMOTE_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def provenance_features() -> dict:
    """The ``datasets`` feature of the ``provenance`` struct column (a dict of features)."""
    import datasets

    sampling = {
        "temperature": datasets.Value("float64"),
        "top_p": datasets.Value("float64"),
        "max_tokens": datasets.Value("int64"),
        "min_tokens": datasets.Value("int64"),
        "n": datasets.Value("int64"),
        "seed": datasets.Value("int64"),
        "stop": datasets.List(datasets.Value("string")),
        "logprobs": datasets.Value("int64"),
        "json_schema": datasets.Value("string"),
    }
    stage = {
        "stage": datasets.Value("string"),
        "model": datasets.Value("string"),
        "revision": datasets.Value("string"),
        "template_version": datasets.Value("string"),
        "sampling": sampling,
        "raw_completions": datasets.List(datasets.Value("string")),
        "status": datasets.List(datasets.Value("string")),
        "finish_reason": datasets.List(datasets.Value("string")),
        "json_repaired": datasets.Value("int64"),
        "prompt_tokens": datasets.Value("int64"),
        "completion_tokens": datasets.Value("int64"),
    }
    return {
        "model": datasets.Value("string"),
        "revision": datasets.Value("string"),
        "template_version": datasets.Value("string"),
        "sampling": sampling,
        "seed_id": datasets.Value("string"),
        "english_response": datasets.Value("string"),
        "english_scores": datasets.List({"criterion": datasets.Value("string"), "score": datasets.Value("int32")}),
        "english_score": datasets.Value("float64"),
        "candidates": datasets.List(datasets.Value("string")),
        "candidate_scores": datasets.List(datasets.Value("float64")),
        "best_index": datasets.Value("int32"),
        "best_score": datasets.Value("float64"),
        "language_id": datasets.Value("string"),
        "language_prob": datasets.Value("float64"),
        "language_ok": datasets.Value("bool"),
        "contamination_status": datasets.Value("string"),
        "stages": datasets.List(stage),
    }


def _sampling(text) -> dict | None:
    if text in (None, ""):
        return None
    d = json.loads(text) if isinstance(text, str) else dict(text)
    schema = d.get("json_schema")
    return {
        "temperature": d.get("temperature"),
        "top_p": d.get("top_p"),
        "max_tokens": d.get("max_tokens"),
        "min_tokens": d.get("min_tokens"),
        "n": d.get("n"),
        "seed": d.get("seed"),
        "stop": list(d.get("stop") or []),
        "logprobs": d.get("logprobs"),
        "json_schema": json.dumps(schema, sort_keys=True) if schema is not None else None,
    }


def _as_list(value) -> list:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _scores(text) -> list[dict] | None:
    obj = json.loads(text) if isinstance(text, str) else text
    return [{"criterion": k, "score": int(v)} for k, v in obj.items()] if isinstance(obj, dict) else None


def synthesis_provenance(record: Mapping[str, Any]) -> tuple[dict | None, dict]:
    """Split the columns of a synthesis output row into the typed ``provenance`` struct and the rest.

    Returns ``(None, record)`` for a row that ``xl-suite synthesize`` did not make (no ``<stage>_model`` column).

    >>> row = {"refine_model": "m", "refine_revision": "", "refine_template": "synth_refine@1+abc",
    ...        "refine_sampling": '{"temperature": 0.0, "n": 1}', "refine_raw": "text", "refine_status": "ok",
    ...        "seed_id": "s1", "extra": 1}
    >>> prov, rest = synthesis_provenance(row)
    >>> prov["stages"][0]["template_version"], prov["stages"][0]["sampling"]["temperature"], rest
    ('synth_refine@1+abc', 0.0, {'extra': 1})
    """
    if not any(f"{p}_model" in record for p in _STAGE_PREFIXES):
        return None, dict(record)
    rest = dict(record)

    def take(key, default=None):
        return rest.pop(key, default)

    stages = []
    for p in _STAGE_PREFIXES:
        if f"{p}_model" not in rest:
            continue
        repaired = take(f"{p}_repaired")
        stages.append(
            {
                "stage": p,
                "model": take(f"{p}_model"),
                "revision": take(f"{p}_revision") or None,
                "template_version": take(f"{p}_template"),
                "sampling": _sampling(take(f"{p}_sampling")),
                "raw_completions": _as_list(take(f"{p}_raw")),
                "status": _as_list(take(f"{p}_status")),
                "finish_reason": _as_list(take(f"{p}_finish_reason")),
                "json_repaired": int(sum(repaired) if isinstance(repaired, list) else bool(repaired)),
                "prompt_tokens": take(f"{p}_prompt_tokens"),
                "completion_tokens": take(f"{p}_completion_tokens"),
            }
        )
    scores = take("score_scores")
    judge_means = take("judge_means")
    prov = {
        "model": take("model"),
        "revision": take("revision") or None,
        "template_version": take("template_version"),
        "sampling": _sampling(take("sampling")),
        "seed_id": take("seed_id"),
        "english_response": take("response_en"),
        "english_scores": _scores(scores) if scores is not None else None,
        "english_score": take("score_mean"),
        "candidates": take("candidates"),
        "candidate_scores": [float(m) for m in judge_means] if judge_means is not None else None,
        "best_index": take("best_index"),
        "best_score": take("best_score"),
        "language_id": take("language_id"),
        "language_prob": take("language_prob"),
        "language_ok": take("language_ok"),
        "contamination_status": take("contamination_status"),
        "stages": stages,
    }
    for key in (  # bookkeeping columns whose content is in the struct or in the status above
        "seed_text",
        "judge_scores",
        "score_passed",
        "judge_passed",
        "language_status",
        "language_passed",
        "contamination_match",
        "contamination_overlap",
        "decontaminated",
    ):
        rest.pop(key, None)
    return prov, rest


# -- what may leave the machine --------------------------------------------------------------------------------


def _is_local_path(text: str) -> bool:
    return bool(text) and not _REMOTE_RE.match(text) or str(text).startswith("file://")


def private_strings(paths: Iterable[str | os.PathLike | None] = ()) -> dict[str, list[str]]:
    """What must not be published: ``{"paths": [...], "names": [...], "secrets": [...]}``.

    Paths: the home and working folders and the local ``paths`` given (absolute and resolved; a relative path as
    given, ``alpaca_eval.json``, names no one and stays in "local file alpaca_eval.json"). Names: the
    user name (``$USER``, ``$LOGNAME``, the login) and the host name, when at least 6 characters long (shorter ones,
    like ``root`` or ``vm``, are ordinary words and identify no one; inside a path they go with the path). Secrets: the
    credential-like environment variables (:func:`xl_suite.safety.secret_values`).
    """
    found: set[str] = set()
    for p in [os.path.expanduser("~"), os.getcwd(), *paths]:
        if not p or not _is_local_path(str(p)):
            continue
        p = str(p).removeprefix("file://")
        for form in {os.path.abspath(os.path.expanduser(p)), os.path.realpath(os.path.expanduser(p))}:
            form = form.rstrip("/")
            if len(form) > 1 and form not in ("/tmp", "/var", "/home", "/usr", "/work"):
                found.add(form)
    names: set[str] = set()
    for var in ("USER", "LOGNAME", "USERNAME"):
        names.add(os.environ.get(var) or "")
    try:
        import getpass

        names.add(getpass.getuser())
    except Exception:  # noqa: BLE001 - no login name (some containers): nothing to hide
        pass
    names.add(socket.gethostname())
    names.add(socket.gethostname().split(".")[0])
    return {
        "paths": sorted(found, key=len, reverse=True),
        "names": sorted((n for n in names if len(n) >= _MIN_NAME_LEN), key=len, reverse=True),
        "secrets": secret_values(),
    }


def public_text(text: object, private: Mapping[str, list[str]] | None = None, *, full: bool = True) -> str:
    """``text`` without credentials, known local paths, and (``full``) any absolute path, user or host name.

    Known private paths become ``<local>``; other absolute paths keep only their last part (``<local>/file.jinja``);
    user and host names (whole words) become ``<name>``.

    >>> p = {"paths": ["/home/zelda/run"], "names": ["zelda", "box7-host"], "secrets": []}
    >>> public_text("/home/zelda/run/score.jinja@1+abc on box7-host, hf://datasets/a/b", p)
    '<local>/score.jinja@1+abc on <name>, hf://datasets/a/b'
    >>> public_text("template /opt/zelda/t.jinja@0+ff", p)
    'template <local>/t.jinja@0+ff'
    >>> public_text("Mount it at /mnt/data, zelda.", p, full=False)
    'Mount it at /mnt/data, zelda.'
    """
    private = private if private is not None else private_strings()
    out = scrub_secrets(text, extra=private.get("secrets", []))
    for path in private.get("paths", []):
        out = out.replace(path, _LOCAL)
    if not full:
        return out
    out = _PATH_RE.sub(lambda m: m.group(0) if m.group(0).startswith(_LOCAL) else _basename(m.group(0)), out)
    for name in private.get("names", []):
        out = re.sub(rf"(?<![\w]){re.escape(name)}(?![\w])", "<name>", out)
    return out


def _basename(path: str) -> str:
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    return f"{_LOCAL}/{tail}" if tail and tail != "~" else _LOCAL


def public_source(source: str | None, private: Mapping[str, list[str]] | None = None) -> str | None:
    """How a source is named in public: remote URLs and Hub ids as they are (credentials removed), a local path as
    ``local file <name>``/``local folder``.

    >>> public_source("hf://datasets/viyer98/xl-instruct")
    'hf://datasets/viyer98/xl-instruct'
    >>> public_source("https://user:pw@example.org/a.json")
    'https://example.org/a.json'
    >>> public_source("/home/someone/data/alpaca_eval.json", {"paths": [], "names": [], "secrets": []})
    'local file alpaca_eval.json'
    """
    if source is None:
        return None
    text = str(source)
    if _REMOTE_RE.match(text) and not text.startswith("file://"):
        text = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", text, flags=re.IGNORECASE)
        return public_text(text, private, full=False)
    name = text.removeprefix("file://").rstrip("/").rsplit("/", 1)[-1]
    kind = "file" if "." in name else "folder"
    return public_text(f"local {kind} {name}" if kind == "file" else "local folder", private)


def _public_value(value, private, full: bool):
    if isinstance(value, str):
        return public_text(value, private, full=full)
    if isinstance(value, list):
        return [_public_value(v, private, full) for v in value]
    if isinstance(value, dict):  # generated text inside provenance is data: only credentials and known paths go
        return {k: _public_value(v, private, full and k not in _TEXT_KEYS) for k, v in value.items()}
    return value


def public_dataset(data, private: Mapping[str, list[str]] | None = None):
    """Every split of ``data`` with :func:`public_text` applied: fully to the provenance columns
    (:data:`PROVENANCE_COLUMNS`), to credentials and known local paths in the other string columns."""
    private = private if private is not None else private_strings()

    def clean(batch: dict[str, list]) -> dict[str, list]:
        return {k: [_public_value(v, private, k in PROVENANCE_COLUMNS) for v in vals] for k, vals in batch.items()}

    return data.map(clean, batched=True, desc="removing private strings", load_from_cache_file=False)


def check_public(text: str, where: str, private: Mapping[str, list[str]]) -> None:
    """Refuse to publish ``text`` if it holds a private path, name or credential (the message names the kind only).

    User and host names are checked when at least 6 characters long (see :func:`private_strings`).

    Raises:
        InvalidArgumentError: naming ``where`` and what kind of string was found.
    """
    for kind in ("secrets", "paths", "names"):
        for value in private.get(kind, []):
            pattern = re.escape(value) if kind != "names" else rf"(?<![\w]){re.escape(value)}(?![\w])"
            if re.search(pattern, text):
                raise InvalidArgumentError(
                    f"Refusing to publish {where}: it still holds a private {kind[:-1]} "
                    "(a local path, the user or host name, or a credential). This is a bug in xl-suite; please report it."
                )


# -- recipes ---------------------------------------------------------------------------------------------------


def _hub_id_or_url(text: str | None) -> bool:
    if not text:
        return False
    if _REMOTE_RE.match(text):
        return not text.startswith("file://")
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", text)) and not os.path.exists(text)


def _template_file(version: str) -> tuple[str, str, str]:
    """(name or path, version, sha) of a recorded ``name@version+sha``."""
    head, _, sha = version.rpartition("+")
    name, _, ver = head.rpartition("@")
    return name, ver, sha


def build_recipe(config_name: str, source: str, *, storage_options: dict | None = None) -> tuple[dict, dict] | None:
    """The recipe files of a synthesized config and what the card shows of them; ``None`` without ``summary.json``.

    Files (``recipes/<config>/``): ``config.yaml`` (the settings of ``xl-suite synthesize``, named like its flags:
    engine, seeds where public, every :class:`~xl_suite.synthesis.SynthesisConfig` field, the templates below),
    ``templates/<stage>.jinja`` (the exact template of each LLM stage, checked against the recorded sha) and
    ``summary.json``; all with private strings removed.

    Raises:
        InvalidArgumentError: a recorded template is missing or was edited since the run (its sha differs).
    """
    import fsspec
    import yaml

    from xl_suite.prompting import load_template

    fs, root = fsspec.core.url_to_fs(str(source), **(storage_options or {}))
    summary_path = root.rstrip("/") + "/summary.json"
    if not fs.isfile(summary_path):
        return None
    summary = json.loads(fs.cat_file(summary_path).decode("utf-8"))
    private = private_strings([source])
    base = f"{RECIPES_DIR}/{config_name}"
    notes: list[str] = []
    files: dict[str, bytes] = {}
    templates: dict[str, str] = {}
    for stage in summary.get("stages", []):
        version = stage.get("template")
        if not version:
            continue
        name, ver, sha = _template_file(version)
        try:
            tpl = load_template(name)
        except Exception as e:  # TemplateError (missing file): say which and what to do
            raise InvalidArgumentError(
                f"The recipe of {config_name!r} needs the template of stage {stage['stage']!r} "
                f"({public_text(name, private)}), which cannot be loaded ({public_text(e, private)}). Restore it, or "
                "rerun the synthesis."
            ) from e
        if tpl.sha != sha:
            raise InvalidArgumentError(
                f"The template of stage {stage['stage']!r} ({public_text(name, private)}) changed since the run "
                f"(sha {tpl.sha}, the run used {sha}). Restore the version the run used, or rerun the synthesis."
            )
        rel = f"{base}/templates/{stage['stage']}.jinja"
        files[rel] = public_text(tpl.source, private, full=False).encode("utf-8")
        templates[stage["stage"]] = rel
    config = dict(summary.get("config") or {})
    config.pop("templates", None)
    against = [s for s in config.pop("decontaminate_against", None) or [] if _hub_id_or_url(s)]
    if len(against) != len(summary.get("config", {}).get("decontaminate_against") or []):
        notes.append(
            "The run was decontaminated against local benchmark files (not published; see summary.json for the "
            "prompt count and sha256); add --decontaminate-against PATH to do the same."
        )
    settings: dict[str, Any] = {}
    gen, scorer = summary.get("generator") or {}, summary.get("scorer") or {}
    from xl_suite.engines.registry import BACKENDS

    if gen.get("backend") in BACKENDS:
        settings["backend"] = gen["backend"]
    else:
        notes.append(f"The generator's backend was not recorded ({gen.get('backend')!r}); add --backend.")
    model = str(gen.get("model") or "")
    if _is_local_path(model) and (model.startswith(("/", "~", ".")) or os.path.exists(model)):
        notes.append(f"The generator was a local model ({public_text(model, private)}); add --model PATH_OR_ID.")
    else:
        settings["model"] = model
    if gen.get("revision"):
        settings["revision"] = gen["revision"]
    if gen.get("truncate_prompts"):
        settings["truncate_prompts"] = True
    engine_keys = ("model", "revision", "truncate_prompts")
    if tuple(scorer.get(k) for k in engine_keys) != tuple(gen.get(k) for k in engine_keys):
        settings["scorer_backend"] = scorer.get("backend")
        smodel = str(scorer.get("model") or "")
        if smodel.startswith(("/", "~", ".")) or os.path.exists(smodel):
            notes.append(f"The scorer was a local model ({public_text(smodel, private)}); add --scorer-model PATH.")
        else:
            settings["scorer_model"] = smodel
        if scorer.get("revision"):
            settings["scorer_revision"] = scorer["revision"]
        if scorer.get("truncate_prompts"):
            settings["scorer_truncate_prompts"] = True
    seeds = (summary.get("seeds") or {}).get("source")
    if seeds in (None, "builtin") or _hub_id_or_url(seeds):
        settings["seeds"] = seeds or "builtin"
    else:
        notes.append("The seed passages were a local file (not published); add --seeds PATH.")
    settings["text_column"] = (summary.get("seeds") or {}).get("text_column") or "text"
    settings["output"] = f"{config_name}-rerun"
    settings.update(config)
    if against:
        settings["decontaminate_against"] = against
    settings["templates"] = [f"{stage}={rel}" for stage, rel in templates.items()]
    command = f"xl-suite synthesize --config-file {base}/config.yaml"
    header = (
        f"# Recipe of {config_name}, written by xl-suite {summary.get('xl_suite_version')}.\n"
        f"# Rerun from the root of a download of the dataset repo:\n#   {command}\n"
        + "".join(f"# Note: {n}\n" for n in notes)
    )
    body = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True, width=1000)
    # settings hold no path (templates are relative, local seeds/models/benchmarks left out with a note above);
    # the user's own text (criteria) is treated like data: credentials and known local paths removed
    files[f"{base}/config.yaml"] = (header + public_text(body, private, full=False)).encode("utf-8")
    public_summary = _public_value(summary, private, True)
    files[f"{base}/summary.json"] = (json.dumps(public_summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    card = {
        "path": base,
        "command": command,
        "notes": notes,
        "generator": public_text(_engine_text(gen), private),
        "scorer": public_text(_engine_text(scorer), private),
        "stages": [
            {
                "stage": s["stage"],
                "model": s.get("model"),
                "template": s.get("template"),
                "rows_in": s.get("rows_in"),
                "rows_out": s.get("rows_out"),
                "kept_rate": s.get("kept_rate"),
                "parse_rate": s.get("parse_rate"),
                "json_repaired": s.get("json_repaired", 0),
                "prompt_truncated": s.get("prompt_truncated", 0),
            }
            for s in public_summary.get("stages", [])
        ],
        "final": public_summary.get("final", {}),
        "decontamination": {
            k: v for k, v in (public_summary.get("decontamination") or {}).items() if k not in ("dropped_by_stage",)
        },
        "seeds": {k: public_summary.get("seeds", {}).get(k) for k in ("processed", "used")},
    }
    return files, card


def _engine_text(engine: Mapping) -> str:
    revision = f", revision {engine['revision']}" if engine.get("revision") else ""
    truncation = ", prompts truncated to the context" if engine.get("truncate_prompts") else ""
    return f"{engine.get('model')} ({engine.get('backend')}{revision}{truncation})"


def mark_default_config(configs: Sequence[Mapping] | None) -> list[dict]:
    """The README ``configs:`` with exactly one ``default: true``, so ``load_dataset(repo)`` needs no config name.

    An existing default is kept; otherwise the first single-language XL-AlpacaEval config, else the first config.

    >>> mark_default_config([{"config_name": "xl-instruct-mt"}, {"config_name": "xl-alpacaeval-de"}])
    [{'config_name': 'xl-instruct-mt'}, {'config_name': 'xl-alpacaeval-de', 'default': True}]
    >>> mark_default_config([{"config_name": "b", "default": True}, {"config_name": "a"}])
    [{'config_name': 'b', 'default': True}, {'config_name': 'a'}]
    """
    out = [dict(c) for c in configs or []]
    if not out or any(c.get("default") for c in out):
        return out
    names = sorted(c["config_name"] for c in out)
    preferred = [n for n in names if n.startswith("xl-alpacaeval-") and not n.endswith("-all")]
    choice = (preferred or names)[0]
    for c in out:
        if c["config_name"] == choice:
            c["default"] = True
    return out
