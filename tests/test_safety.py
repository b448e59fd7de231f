"""xl_suite.safety: which folders --overwrite may replace (symlinks, files, missing and empty folders), unique
temporary names, secrets scrubbed from messages. The export's own --overwrite attacks are in datasets/test_export.py."""

import os
from pathlib import Path

import pytest

from xl_suite.errors import OutputExistsError
from xl_suite.safety import check_replaceable, scrub_secrets, unique_temp_path


REPO = Path(__file__).resolve().parents[1]


def test_symlink_and_file_targets(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OutputExistsError):
        check_replaceable(link, overwrite=True)
    assert check_replaceable(tmp_path / "missing", overwrite=False) is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_replaceable(empty, overwrite=False) is False


def test_unique_temp_names_differ_across_calls_and_processes():
    names = {unique_temp_path("/out/x.parquet") for _ in range(100)}
    assert len(names) == 100 and all(f"-{os.getpid()}-" in n for n in names)


def test_scrub_secrets_covers_environment_tokens(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567")
    monkeypatch.setenv("HF_TOKEN", "hf_zzzzzzzzzzzzzzzz")
    out = scrub_secrets("a tok-1234567 b hf_zzzzzzzzzzzzzzzz c sk-proj-abcdefghij")
    assert out == "a *** b *** c ***"


def test_no_fixed_temporary_names_in_the_package():
    """Temporary files get unique names (safety.unique_temp_path), never a fixed suffix two runs would share."""
    import re

    # a string literal that ends in a fixed temporary suffix (".new", f"{x}.tmp-empty"), or with_suffix(".tmp")
    fixed = re.compile(r"""(\.new|\.tmp|\.partial|\.tmp-empty|\.old)["']|with_suffix\(["']\.tmp""")
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted((REPO / "xl_suite").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if fixed.search(line)
    ]
    assert not hits, hits
