"""Peak memory of loading a source file through its builder, for a file and one 10x larger (issue 17).

Sources (the authors' XL-Instruct files, m-AlpacaEval files, a synthesis run's output) are read record by record
(:func:`xl_suite.sources.iter_records`: Parquet a record batch at a time, JSON Lines a line at a time, a JSON list
one element at a time) and written by ``datasets`` in batches, so the peak memory of
``xl_suite.load_xl_suite("xl-instruct-de", source=FILE)`` should not grow with the file. For each format this
script writes an XL-Instruct source of ``--rows`` rows and one of ``10 * --rows`` rows (about 1.2 KB of random
text per row), loads each in a fresh process, and prints the peak resident memory (``ru_maxrss``) of both processes and their
ratio. ``--compare`` also measures the whole-file reader the package used before (``json.loads`` of the whole text).

    OMP_NUM_THREADS=1 python benchmarks/bench_sources.py [--rows 20000] [--formats jsonl,json,parquet] [--compare]

The last line printed is ``ratio_jsonl=X ratio_json=Y ratio_parquet=Z`` (goal: each <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
mode, source, cache = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if mode == "load":
    import xl_suite
    ds = xl_suite.load_xl_suite("xl-instruct-de", split="train", source=source, cache_dir=cache)
    rows = ds.num_rows
else:  # the reader before: the whole file in memory, then every record as a dict
    with open(source, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    data = json.loads(text) if text.lstrip().startswith("[") else [json.loads(l) for l in text.split("\n") if l.strip()]
    rows = len(data)
print(json.dumps({"rows": rows, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start}))
"""


def write_source(path: Path, rows: int, fmt: str) -> None:
    """An XL-Instruct source of ``rows`` rows (instruction, response, a score) in ``fmt``."""
    import base64
    import random

    rng = random.Random(0)

    def record(i: int) -> dict:  # random text: Parquet's compression cannot shrink the larger file away
        body = base64.b64encode(rng.randbytes(720)).decode()
        return {"instruction": f"Question {i}: {body[:200]}", "response": f"Antwort {i}: {body}", "score": i % 5}

    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(
            path, pa.schema([("instruction", pa.string()), ("response", pa.string()), ("score", pa.int64())])
        ) as writer:
            for start in range(0, rows, 10_000):
                writer.write_table(pa.Table.from_pylist([record(i) for i in range(start, min(rows, start + 10_000))]))
        return
    with path.open("w", encoding="utf-8") as f:
        if fmt == "json":
            f.write("[\n")
        for i in range(rows):
            sep = ",\n" if fmt == "json" and i else ""
            f.write(sep + json.dumps(record(i), ensure_ascii=False) + ("\n" if fmt == "jsonl" else ""))
        if fmt == "json":
            f.write("\n]\n")


def measure(mode: str, source: Path, cache: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(source), str(cache)],
        capture_output=True,
        text=True,
        check=False,
        env={**__import__("os").environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"},
    )
    if r.returncode != 0:
        raise SystemExit(f"{mode} {source} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows of the small file (the large one has 10x)")
    ap.add_argument("--formats", default="jsonl,json,parquet", help="comma-separated: jsonl, json, parquet")
    ap.add_argument("--compare", action="store_true", help="also measure the earlier whole-file reader")
    args = ap.parse_args()
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for fmt in args.formats.split(","):
            peaks = []
            for rows in (args.rows, 10 * args.rows):
                folder = tmp / f"{fmt}-{rows}"
                folder.mkdir()
                source = folder / f"de.{fmt}"
                t0 = time.perf_counter()
                write_source(source, rows, fmt)
                size = source.stat().st_size / 2**20
                out = measure("load", folder, tmp / f"cache-{fmt}-{rows}")
                assert out["rows"] == rows, out
                line = f"{fmt:8} {rows:>8} rows {size:8.1f} MiB: peak {out['peak_mib']:7.1f} MiB, load {out['seconds']:.1f} s"
                if args.compare and fmt != "parquet":
                    old = measure("whole-file", source, tmp / "unused")
                    line += f" (whole-file reader: peak {old['peak_mib']:.1f} MiB)"
                print(line + f" [written in {time.perf_counter() - t0 - out['seconds']:.1f} s]", flush=True)
                peaks.append(out["peak_mib"])
                source.unlink()
            ratios[fmt] = peaks[1] / peaks[0]
            print(f"{fmt}: peak memory for the 10x file / the 1x file = {ratios[fmt]:.3f} (goal <= 1.3)", flush=True)
    print(" ".join(f"ratio_{fmt}={ratio:.3f}" for fmt, ratio in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
