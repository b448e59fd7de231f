"""Run inside a venv holding ``pip install xl-suite`` with NO extras, offline: the datasets and the metric work.

Called by ``tools/ci_base_install.sh`` (CI), from a folder outside the checkout so that the installed package is
imported, with ``HF_HUB_OFFLINE=1``. Every step is a real call whose result is checked; the script exits non-zero
with the failing step on the first problem.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import tempfile
from pathlib import Path


#: Dependencies of the extras that must NOT come with the base install (the point of the job).
NOT_IN_BASE = ("datasketch", "langcodes", "language_data", "sklearn", "scipy", "torch", "vllm", "transformers")


def main() -> int:
    import datasets
    import evaluate

    import xl_suite

    checkout = Path(__file__).resolve().parents[1]
    assert checkout not in Path(xl_suite.__file__).resolve().parents, f"imported the checkout: {xl_suite.__file__}"
    present = [m for m in NOT_IN_BASE if importlib.util.find_spec(m) is not None]
    assert not present, f"the base install pulled extras' dependencies: {present}"

    # 1. The metric, from the installed wheel, offline: language fidelity.
    metric = evaluate.load(xl_suite.metric_path(), "fidelity")
    out = metric.compute(
        predictions=[
            "Das Wetter ist heute wirklich schön.",
            "The weather is nice today.",
            "Il fait beau aujourd'hui.",
        ],
        languages=["de", "de", "fr"],
    )
    assert out["detected_language"] == ["de", "en", "fr"], out["detected_language"]
    assert math.isclose(out["language_fidelity"], 200 / 3), out["language_fidelity"]
    print(f"metric: language_fidelity={out['language_fidelity']:.1f} detected={out['detected_language']}")

    # 2. The function itself, Norwegian Bokmål under the code most datasets carry (an alias of the built-in "no").
    fid = xl_suite.language_fidelity(["Været er veldig fint i dag, så vi går en lang tur i skogen."], "nb")
    assert fid["language_fidelity"] == 100.0 and fid["detected_language"] == ["no"], fid
    print(f"language_fidelity(nb): {fid['language_fidelity']} ({fid['config']['identifier']})")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "alpaca_eval.json"
        prompts = ["Name three rivers in Europe.", "How do I bake bread?", "Write a haiku about autumn."]
        source.write_text(json.dumps([{"instruction": p, "output": "", "dataset": "ci"} for p in prompts]))

        # 3. The loader (builder, normal datasets cache) on a local source.
        ds = xl_suite.load_xl_suite("xl-alpacaeval-de", split="test", source=str(source), cache_dir=str(tmp / "c"))
        assert ds.num_rows == 3 and ds[0]["language"] == "de", ds
        assert ds[0]["instruction"].startswith("Name three rivers in Europe."), ds[0]["instruction"]
        print(f"load_xl_suite: {ds.num_rows} rows, columns {ds.column_names[:4]}...")

        # 4. Export as a data-only repo, then plain datasets.load_dataset on it.
        repo = xl_suite.export_repo(
            tmp / "repo", languages=["de", "mt"], alpaca_eval=str(source), cache_dir=str(tmp / "c")
        )
        loaded = datasets.load_dataset(str(repo), "xl-alpacaeval-mt", split="test", cache_dir=str(tmp / "c2"))
        assert loaded.num_rows == 3 and set(loaded["language"]) == {"mt"}, loaded
        print(f"export + datasets.load_dataset: {loaded.num_rows} rows of xl-alpacaeval-mt")

    # 5. An extra's feature names its extra in one line.
    from xl_suite.errors import MissingDependencyError

    for call, extra in (
        (
            lambda: __import__("xl_suite.synthesis.decontamination").synthesis.decontamination.NearDuplicateIndex(),
            "synthesis",
        ),
        (
            lambda: xl_suite.register_language(
                xl_suite.LanguageSpec(code="gsw", name="swiss german", native_name="Schwiizertüütsch", script="Latn")
            ),
            "languages",
        ),
    ):
        try:
            call()
        except MissingDependencyError as e:
            message = str(e)
            assert f"pip install 'xl-suite[{extra}]'" in message and "\n" not in message, message
            print(f"missing extra: {message}")
        else:
            raise AssertionError(f"expected MissingDependencyError naming [{extra}]")
    print("base install: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
