"""Measure what `pip install xl-suite` and each extra add, in installed megabytes (the README's extras table).

A throwaway venv gets the base install (`pip install -c requirements/test.lock .`, no extras) and its size on
disk is measured. For each extra, pip resolves `.[extra]` in that venv without installing (`--dry-run --report`),
which lists exactly the distributions the extra would add at the lock's versions; their installed sizes are the
sizes of the same distributions (same versions) in a reference environment that has every extra installed (the test
venv, `make venv`): the sum of the files each one installed. So nothing of the heavy extras is downloaded again.

    python tools/measure_extras.py [--reference /path/to/.venv/bin/python] [--extras synthesis,languages,...]

Prints one Markdown row per extra: what it adds (the largest packages) and its size; "not measured" where the
reference environment lacks a distribution the extra adds (e.g. upstream `vllm`, a CUDA build).
"""

from __future__ import annotations

import argparse
import configparser
import json
import subprocess
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "test.lock"

_SIZES = r"""
import json, sys
from importlib import metadata
out = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"].lower().replace("_", "-")
    total = 0
    for f in dist.files or ():
        try:
            total += f.locate().stat().st_size
        except OSError:
            pass
    out[name] = {"version": dist.version, "bytes": total}
print(json.dumps(out))
"""


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_sizes(python: str) -> dict[str, dict]:
    """Distribution name -> version and bytes on disk, in the environment of ``python``."""
    r = subprocess.run([python, "-c", _SIZES], capture_output=True, text=True, check=True)
    return {_norm(k): v for k, v in json.loads(r.stdout).items()}


def extras() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [name for name in cfg["options.extras_require"] if name != "tests"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=sys.executable, help="python of an environment with every extra")
    ap.add_argument("--extras", default=None, help="comma-separated extras (default: all but tests)")
    args = ap.parse_args()
    reference = installed_sizes(args.reference)
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", "-U", "pip", "-c", str(LOCK)], check=True)
        subprocess.run([*pip, "install", "-q", "-c", str(LOCK), str(REPO)], check=True)
        base = installed_sizes(str(venv / "bin" / "python"))
        base_mb = sum(v["bytes"] for k, v in base.items() if k not in {"pip", "setuptools", "xl-suite"}) / 1e6
        print(f"| (base) `pip install xl-suite` | {len(base) - 2} distributions | {base_mb:.0f} MB |")
        for extra in args.extras.split(",") if args.extras else extras():
            report = Path(tmp) / f"{extra}.json"
            r = subprocess.run(
                [*pip, "install", "-q", "--dry-run", "--report", str(report), "-c", str(LOCK), f"{REPO}[{extra}]"],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                print(f"| `{extra}` | could not resolve: {r.stderr.strip().splitlines()[-1][:80]} | - |")
                continue
            added = [
                (_norm(item["metadata"]["name"]), item["metadata"]["version"])
                for item in json.loads(report.read_text())["install"]
                if _norm(item["metadata"]["name"]) != "xl-suite"
            ]
            missing = [f"{n}=={v}" for n, v in added if reference.get(n, {}).get("version") != v]
            sizes = sorted(((reference[n]["bytes"], n) for n, v in added if f"{n}=={v}" not in missing), reverse=True)
            total = sum(b for b, _ in sizes) / 1e6
            top = ", ".join(f"{n} {b / 1e6:.0f}" for b, n in sizes[:4] if b >= 1e6)
            note = f"; not measured: {', '.join(missing[:3])}" if missing else ""
            print(f"| `{extra}` | {len(added)} distributions ({top or 'all < 1 MB'}){note} | {total:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
