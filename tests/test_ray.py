"""The synthesis stages on Ray Data: a local Ray started by this module, the fake engine and the tiny vLLM model.

Run under ``flock /tmp/vllm.lock`` on shared small machines: Ray and the engine each want the CPUs.
"""

from __future__ import annotations

import functools
import json

import pytest

from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
from xl_suite.synthesis import SynthesisConfig, synthesize
from xl_suite.synthesis.seeds import builtin_seeds


ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray():
    from xl_suite.synthesis.ray import ray_init_kwargs

    if ray.is_initialized():
        pytest.fail("Ray is already initialized in this process; this module starts its own local Ray.")
    ray.init(**ray_init_kwargs(num_cpus=8))
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _rows(table) -> str:
    return json.dumps(table.to_pylist(), sort_keys=True, default=str)  # NaN scores compare equal as "NaN"


def test_ray_runs_the_same_stages_as_the_local_pipeline(local_ray, tmp_path):
    from xl_suite.synthesis.ray import synthesize_ray

    config = SynthesisConfig(languages=("mt", "de"), max_seeds=12, batch_size=4, chunk_size=8)
    factory = functools.partial(FakeGenerator, FakeSynthesisResponder(unparseable_every=5, low_score_every=4))
    remote = synthesize_ray(builtin_seeds(), factory, config, num_actors=2, output=str(tmp_path / "ray"))
    local = synthesize(builtin_seeds(), factory(), config)
    segments = remote.summary["segments"]
    assert [s["segment"][-1] for s in segments] == ["score", "judge", "decontaminate_target"]
    assert segments[0]["rows_out"] == 12
    for name in ("en_scored.parquet", "mt_bestof3.parquet", "de_bestof3.parquet", "mt.parquet", "de.parquet"):
        variant, code = (
            ("scored", "en")
            if name.startswith("en_")
            else (("bestof3", name[:2]) if "bestof3" in name else ("default", name[:2]))
        )
        ours, theirs = remote.dataset(code, variant), local.dataset(code, variant)
        assert ours.column_names == theirs.column_names
        assert ours.num_rows == theirs.num_rows > 0
        assert _rows(ours.data.table) == _rows(theirs.data.table), name
    assert remote.summary["languages"] == local.summary["languages"]


@pytest.mark.vllm
def test_ray_actor_pool_with_the_tiny_vllm_model(local_ray, tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    import xl_suite
    from xl_suite.synthesis.ray import engine_factory, synthesize_ray

    config = SynthesisConfig(
        languages=("mt",),
        max_seeds=4,
        threshold=1.0,
        language_filter=False,
        max_tokens=96,
        batch_size=64,
        chunk_size=64,
    )
    factory = engine_factory("vllm", str(tiny_model_dir), max_model_len=2048, seed=0)
    out = tmp_path / "out"
    result = synthesize_ray(builtin_seeds(), factory, config, output=str(out), structured_outputs=True)
    segments = result.summary["segments"]
    assert segments[0]["rows_in"] == 4 and segments[0]["rows_out"] == 4
    scored = result.dataset("en", "scored")
    assert set(scored["score_status"]) == {"ok"}  # constrained JSON through the engine inside the actor
    assert set(scored["score_model"]) == {str(tiny_model_dir)}
    final = xl_suite.load_dataset("xl-instruct-mt", source=str(out), split="train")
    assert final.num_rows == result.summary["languages"]["mt"]["produced"] > 0
