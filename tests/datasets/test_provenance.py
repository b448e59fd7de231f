"""What may leave the machine (xl_suite.provenance), without a Hub: rows, sources, cards, default configs."""

from __future__ import annotations

import datasets
import pytest

from xl_suite.errors import InvalidArgumentError
from xl_suite.provenance import (
    check_public,
    mark_default_config,
    private_strings,
    public_dataset,
    public_source,
    synthesis_provenance,
)


def test_private_strings_cover_home_user_host_and_secrets(monkeypatch, tmp_path):
    home = tmp_path / "home" / "zelda_quixote"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USER", "zelda_quixote")
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-abcdefghijklmnop0123")
    p = private_strings([str(home / "out"), "relative.json", "hf://datasets/a/b", None])
    assert str(home) in p["paths"] and str(home / "out") in p["paths"]
    assert "relative.json" not in p["paths"] and not any(x.startswith("hf://") for x in p["paths"])
    assert "zelda_quixote" in p["names"] and "sk-abcdefghijklmnop0123" in p["secrets"]


def test_public_dataset_cleans_provenance_fully_and_text_lightly():
    private = {"paths": ["/home/zelda_quixote"], "names": ["zelda_quixote"], "secrets": ["s3cr3t-token-value"]}
    ds = datasets.Dataset.from_dict(
        {
            "response": ["Edit /etc/hosts as root; my key is s3cr3t-token-value; see /home/zelda_quixote/x"],
            "origin": ["/opt/data/zelda_quixote/seeds.json"],
            "provenance": [
                {
                    "template_version": "/srv/templates/score.jinja@1+abc",
                    "model": "zelda_quixote/local-model",
                    "stages": [{"raw_completions": ["Use /etc/hosts, zelda_quixote"]}],
                }
            ],
        }
    )
    row = public_dataset(datasets.DatasetDict({"train": ds}), private)["train"][0]
    assert row["response"] == "Edit /etc/hosts as root; my key is ***; see <local>/x"  # the data's own text stays
    assert row["origin"] == "<local>/seeds.json"
    prov = row["provenance"]
    assert prov["template_version"] == "<local>/score.jinja@1+abc" and prov["model"] == "<name>/local-model"
    assert prov["stages"][0]["raw_completions"] == ["Use /etc/hosts, zelda_quixote"]  # generated text: light


def test_public_source_and_check_public():
    none = {"paths": [], "names": [], "secrets": []}
    assert public_source("/data/me/m-alpacaeval", none) == "local folder"
    assert public_source("s3://bucket/x.parquet", none) == "s3://bucket/x.parquet"
    private = {"paths": ["/home/zelda_quixote"], "names": ["zelda_quixote"], "secrets": ["hf_abcdefghijklmnop"]}
    check_public("a clean card about root vegetables", "the card", private)
    for leak in ("/home/zelda_quixote/run", "by zelda_quixote", "token hf_abcdefghijklmnop"):
        with pytest.raises(InvalidArgumentError, match="Refusing to publish the card"):
            check_public(leak, "the card", private)


def test_synthesis_provenance_leaves_foreign_rows_alone():
    prov, rest = synthesis_provenance({"prompt": "x", "target": "y"})
    assert prov is None and rest == {"prompt": "x", "target": "y"}


def test_exported_folder_loads_without_a_config_name(tmp_path):
    from xl_suite.export import write_repo

    a = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": ["1"], "instruction": ["Hallo"]})})
    b = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"id": ["2"], "instruction": ["Hi"]})})
    repo = write_repo(tmp_path / "repo", {"xl-instruct-de": a, "xl-alpacaeval-de": (b, str(tmp_path / "ae.json"))})
    readme = (repo / "README.md").read_text()
    assert "default: true" in readme and str(tmp_path) not in readme and "local file ae.json" in readme
    loaded = datasets.load_dataset(str(repo))  # the default config: the XL-AlpacaEval one
    assert list(loaded) == ["test"] and loaded["test"][0]["instruction"] == "Hi"
    assert mark_default_config([]) == []


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_export_of_a_synthesis_output_carries_its_recipe(tmp_path):
    import json

    import xl_suite
    from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
    from xl_suite.export import write_repo
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    out = tmp_path / "zelda_quixote" / "out"
    config = SynthesisConfig(languages=("mt",), n_candidates=2)
    synthesize(builtin_seeds().select(range(3)), FakeGenerator(FakeSynthesisResponder()), config, output=str(out))
    data = xl_suite.load_xl_suite("xl-instruct-mt", source=str(out))
    repo = write_repo(tmp_path / "repo", {"xl-instruct-mt": (data, str(out))})
    recipe = repo / "recipes" / "xl-instruct-mt"
    assert (recipe / "config.yaml").is_file() and (recipe / "templates" / "respond.jinja").is_file()
    readme = (repo / "README.md").read_text()
    assert "xl-suite synthesize --config-file recipes/xl-instruct-mt/config.yaml" in readme
    for f in repo.rglob("*"):
        if f.is_file() and f.suffix in (".md", ".yaml", ".json", ".jinja"):
            assert str(tmp_path) not in f.read_text(), f
    assert json.loads((recipe / "summary.json").read_text())["output"] == "<local>"
