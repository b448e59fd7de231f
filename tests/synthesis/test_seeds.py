"""Seeds (xl_suite.synthesis.seeds): empty or duplicate seed files are a SeedError naming the file or id."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xl_suite.errors import SeedError
from xl_suite.synthesis.seeds import SeedCounts, load_seeds, prepare_seeds


@pytest.mark.parametrize("name", ["seeds.jsonl", "seeds.parquet"])
def test_empty_seed_file_is_a_seed_error_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(SeedError, match=name):
        load_seeds(str(path))


def test_parquet_seed_file_with_zero_rows(tmp_path):
    path = tmp_path / "zero.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    with pytest.raises(SeedError, match="zero.parquet"):
        load_seeds(str(path))


def test_duplicate_seed_ids_are_named():
    with pytest.raises(SeedError, match="'x1'"):
        prepare_seeds({"id": ["x1", "x1"], "text": ["a", "b"]}, text_column="text", counts=SeedCounts())
