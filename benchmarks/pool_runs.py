"""Pool several ``run_benchmark.py`` result files into one table (medians over all their records,
per-pair time differences within each run), e.g. two interleaved refine-vs-optimiser runs:

    python benchmarks/pool_runs.py /tmp/s8/acct.jsonl /tmp/s8/acct2.jsonl \
        [--work /tmp/s8/acct_work --work /tmp/s8/acct2_work]

``--work`` (run_benchmark.py's ``--work`` folders: ``METHOD/PAIR/log.json``) adds where the
registration call's time goes: the median seconds of each stage per method.
A pair of one run is compared only with the same pair of the same run (the methods alternate
pair by pair inside a run, so machine load hits both alike; between runs it does not).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import table  # noqa: E402


def pooled_records(paths) -> list:
    """Every record of every file, its pair renamed ``<file number>:<file stem>/<pair>`` so runs
    stay apart (even two files of the same name in different folders)."""
    records = []
    for number, path in enumerate(paths):
        for line in Path(path).read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                rec["pair"] = f"{number}:{Path(path).stem}/{rec['pair']}"
                records.append(rec)
    return records


def stage_seconds(work_dirs) -> str:
    """Markdown lines: per method, the median seconds of the prediction, of each pyramid level and
    of the whole registration call, from the runs' ``log.json`` files."""
    per_method: dict = {}
    for work in work_dirs:
        for log_path in sorted(Path(work).glob("*/*/log.json")):
            log = json.loads(log_path.read_text())
            stages = per_method.setdefault(log_path.parent.parent.name, {})
            if "predict_seconds" in log:
                stages.setdefault("prediction", []).append(log["predict_seconds"])
            for lv in log.get("levels", []):
                stages.setdefault(f"{lv['stage']} @{lv['spacing_mm']:g} mm", []).append(lv["seconds"])
            stages.setdefault("registration call (prediction excluded)", []).append(log["register_seconds"])
    lines = []
    for method, stages in per_method.items():
        parts = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items())
        lines.append(f"- {method} ({len(next(iter(stages.values())))} runs), median s: {parts}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="run_benchmark.py .jsonl files")
    ap.add_argument("--work", type=Path, action="append", default=[], help="run_benchmark.py --work folder (repeatable)")
    a = ap.parse_args()
    records = pooled_records(a.results)
    print(table(records, f"{len(a.results)} runs pooled: {', '.join(str(p) for p in a.results)}"))
    if a.work:
        print(stage_seconds(a.work))


if __name__ == "__main__":
    main()
