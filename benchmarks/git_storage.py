"""The git part of a submission and of staging a job, without HTTP, database or grading.

Per round, as the submit handler does it: `head`, `commit_directory` of a typical upload (a
notebook of about 40 KiB, a data file, a small helper module) and `update_branch`; then, as
staging does, `export` of that commit into a fresh directory. Each student has a repository of
their own, and each round goes to the next student, so repositories grow as in a course. Prints
p50/p95 per step and in all (milliseconds), and, with `--compare`, the same for another copy of
`storage/git.py` (e.g. main's), the two run alternately so that both see the same machine load.

    python benchmarks/git_storage.py --rounds 300 --compare ../main/grader_service/storage/git.py
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = ("head", "commit", "update_branch", "export")


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upload(folder: Path, i: int) -> Path:
    """A typical student upload, different in every round."""
    folder.mkdir(parents=True)
    cells = [{"cell_type": "code", "source": f"x = {i} * {n}\n" * 20, "metadata": {}} for n in range(60)]
    (folder / "assignment.ipynb").write_text(json.dumps({"cells": cells, "nbformat": 4}, indent=1))
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("a,b\n" + "1,2\n" * 500)
    (folder / "helpers.py").write_text(f"ROUND = {i}\n")
    return folder


async def one_round(store: ModuleType, tmp: Path, repo: Path, i: int) -> dict[str, float]:
    files = upload(tmp / f"upload-{i}", i)
    took: dict[str, float] = {}
    t = time.perf_counter()
    parent = await store.head(repo)
    took["head"] = time.perf_counter() - t
    t = time.perf_counter()
    commit = await store.commit_directory(repo, files, "submission by bench", parent)
    took["commit"] = time.perf_counter() - t
    t = time.perf_counter()
    await store.update_branch(repo, commit, parent)
    took["update_branch"] = time.perf_counter() - t
    dest = tmp / f"job-{i}"
    dest.mkdir()
    t = time.perf_counter()
    await store.export(repo, commit, dest)
    took["export"] = time.perf_counter() - t
    return took


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, rounds: list[dict[str, float]]) -> None:
    parts = []
    for step in (*STEPS, "submit", "all"):
        if step == "submit":
            values = [r["head"] + r["commit"] + r["update_branch"] for r in rounds]
        elif step == "all":
            values = [sum(r.values()) for r in rounds]
        else:
            values = [r[step] for r in rounds]
        parts.append(f"{step} {1000 * statistics.median(values):.2f}/{1000 * percentile(values, 0.95):.2f}")
    print(f"{label:10s} p50/p95 ms: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--students", type=int, default=20, help="repositories the rounds go to in turn")
    parser.add_argument("--compare", type=Path, help="another storage/git.py to time alike")
    args = parser.parse_args()
    stores = {"this": load(ROOT / "grader_service" / "storage" / "git.py", "store_this")}
    if args.compare:
        stores["compare"] = load(args.compare, "store_compare")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in stores}
    with tempfile.TemporaryDirectory(prefix="grader-git-bench-") as tmp:
        for i in range(args.rounds):
            for name, store in stores.items():
                base = Path(tmp) / name
                repo = base / "repos" / f"{i % args.students}.git"
                results[name].append(asyncio.run(one_round(store, base / "work", repo, i)))
    print(f"{args.rounds} rounds over {args.students} repositories ({os.uname().machine})")
    for name, rounds in results.items():
        report(name, rounds)


if __name__ == "__main__":
    main()
