"""Benchmark ``regkit register`` against ANTs on a folder of pairNN_{moving,fixed}[_labels].nii.gz.

Every registration runs as a WHOLE PROCESS (python start-up + imports + reading + registering +
writing), timed from outside (``wall_s``); the registration call alone is reported too
(``reg_s``: regkit's log.json ``register_seconds`` plus ``predict_seconds`` with ``--model``, ANTs'
``ants.registration`` call), so the comparison is honest both ways. Methods alternate pair by pair, so CPU contention from other
work hits both alike (it still inflates times: note the machine's load, printed in the table).
Each result is scored by the given ``evaluate.py`` (Dice, HD95, folding %, SDlogJ).

usage:
  python benchmarks/run_benchmark.py DATA --evaluate ../shared/bench/evaluate.py --out results/dev2mm \\
      [--methods regkit,ants_syn] [--regkit-args "--config default"] [--pairs pair00,pair01]
  # two regkit set-ups side by side, alternating pair by pair (first-run order swapped on every
  # other pair), with each pair's whole-process time difference to the first variant:
  python benchmarks/run_benchmark.py DATA --evaluate ../shared/bench/evaluate.py --out results/refine \\
      --methods "" --variant "optimiser=" --variant "cascade+refine40=--model runs/g10/best.safetensors --refine 40"

Writes OUT.jsonl (one record per pair and method; existing records are kept = resume) and
OUT.md (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANTS_TYPES = {"ants_syn": "SyN", "ants_syncc": "SyNCC", "ants_affine": "Affine", "ants_syn_ct": "SyN"}
# CT in HU has negative intensities, which spoil ANTs' default centre-of-mass start (intensity
# weighted); "ants_syn_ct" gives ANTs the images shifted to HU + 1024 (clamped at 0), as a CT user would.
ANTS_ON_SHIFTED_HU = {"ants_syn_ct"}


def pairs_in(data: Path):
    return sorted(p.name[: -len("_moving.nii.gz")] for p in data.glob("pair*_moving.nii.gz"))


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def run_regkit(data: Path, pair: str, work: Path, extra: str) -> dict:
    cmd = ["regkit", "register", str(data / f"{pair}_moving.nii.gz"), str(data / f"{pair}_fixed.nii.gz"),
           "--out", str(work), "--moving-labels", str(data / f"{pair}_moving_labels.nii.gz"),
           "--no-progress", "--force", *shlex.split(extra)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"status": "failed", "stderr": p.stderr[-800:]}
    log = json.loads((work / "log.json").read_text())
    # with --model, the cascade's prediction comes before (and outside) register_seconds
    return {"wall_s": wall, "reg_s": log["register_seconds"] + log.get("predict_seconds", 0.0), "field": str(work / "field.nii.gz"),
            "warped_labels": str(work / "warped_labels.nii.gz"), "command": " ".join(cmd)}


def run_ants(data: Path, pair: str, work: Path, kind: str, timeout: float, ct: bool = False) -> dict:
    cmd = [sys.executable, str(HERE / "ants_worker.py"), str(data / f"{pair}_moving.nii.gz"),
           str(data / f"{pair}_fixed.nii.gz"), str(data / f"{pair}_moving_labels.nii.gz"), str(work), "--type", kind,
           *(["--ct"] if ct else [])]
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="2", OMP_NUM_THREADS="2")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout}
    wall = time.perf_counter() - t0
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        return {"status": "failed", "stderr": p.stderr[-800:]}
    return {"wall_s": wall, "reg_s": json.loads(lines[-1][7:])["reg_seconds"], "field": str(work / "field.nii.gz"),
            "warped_labels": str(work / "warped_labels.nii.gz")}


def evaluate(evaluator: Path, data: Path, pair: str, rec: dict) -> dict:
    cmd = [sys.executable, str(evaluator), "--fixed-labels", str(data / f"{pair}_fixed_labels.nii.gz"),
           "--warped-labels", rec["warped_labels"], "--field", rec["field"]]
    q = subprocess.run(cmd, capture_output=True, text=True)
    if q.returncode != 0:
        return {"status": "eval_failed", "eval_stderr": q.stderr[-800:]}
    res = json.loads(q.stdout.strip().splitlines()[-1])
    res.pop("dice", None)
    return res


def paired_differences(records, methods) -> list:
    """Lines comparing each method's whole-process and registration-call times with the first
    method's on the same pairs: median of the per-pair differences and how many pairs were faster."""
    lines = []
    by = {(r["pair"], r["method"]): r for r in records if "wall_s" in r}
    first = methods[0]
    for m in methods[1:]:
        common = [p for (p, mm) in by if mm == m and (p, first) in by]
        if not common:
            continue
        for key, what in (("wall_s", "whole process"), ("reg_s", "registration call")):
            d = [by[(p, m)][key] - by[(p, first)][key] for p in common]
            lines.append(f"- {m} vs {first}, {what}: median difference {statistics.median(d):+.2f} s per pair, "
                         f"faster on {sum(x < 0 for x in d)} of {len(d)} pairs")
    return lines


def table(records, title: str) -> str:
    rows = [f"### {title}", "", "| method | pairs | Dice mean | HD95 mm | fold % | SDlogJ | whole process s (median) | registration call s (median) | load avg |",
            "|---|---|---|---|---|---|---|---|---|"]
    methods = []
    for r in records:
        if r["method"] not in methods:
            methods.append(r["method"])
    for m in methods:
        ok = [r for r in records if r["method"] == m and "dice_mean" in r]
        if not ok:
            rows.append(f"| {m} | 0 | failed | | | | | | |")
            continue
        mean = lambda k: statistics.fmean(r[k] for r in ok if r.get(k) is not None)  # noqa: E731
        med = lambda k: statistics.median(r[k] for r in ok)  # noqa: E731
        rows.append(f"| {m} | {len(ok)} | {mean('dice_mean'):.3f} | {mean('hd95_mean'):.2f} | {mean('fold_pct'):.4f} | "
                    f"{mean('sdlogj'):.3f} | {med('wall_s'):.2f} | {med('reg_s'):.2f} | {mean('load_before'):.1f} |")
    extra = paired_differences(records, methods)
    return "\n".join(rows + ([""] + extra if extra else [])) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--evaluate", type=Path, required=True, help="path to shared/bench/evaluate.py")
    ap.add_argument("--out", type=Path, required=True, help="results prefix (writes .jsonl and .md)")
    ap.add_argument("--methods", default="regkit,ants_syn")
    ap.add_argument("--regkit-args", default="", help="extra arguments for regkit register, e.g. '--metric mi'")
    ap.add_argument("--label", default="regkit", help="method name for the regkit runs in the table")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=ARGS",
                    help="a named regkit set-up (repeatable), run alongside --methods, alternating pair by pair")
    ap.add_argument("--pairs", default="")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=1800.0)
    a = ap.parse_args()

    data = a.data.resolve()
    pairs = a.pairs.split(",") if a.pairs else pairs_in(data)
    work = (a.work or a.out.parent / (a.out.name + "_work")).resolve()
    jsonl = a.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(l) for l in jsonl.read_text().splitlines()] if jsonl.exists() else []
    seen = {(r["pair"], r["method"]) for r in done}
    runs = [(a.label if m == "regkit" else m, m, a.regkit_args) for m in a.methods.split(",") if m]
    for v in a.variant:
        label, sep, args = v.partition("=")
        if not sep or not label:
            ap.error(f"--variant wants LABEL=ARGS, got {v!r}")
        runs.append((label, "regkit", args))
    for i, pair in enumerate(pairs):
        for name, method, extra in (runs if i % 2 == 0 else runs[::-1]):
            if (pair, name) in seen:
                continue
            wd = work / name / pair
            rec = {"pair": pair, "method": name, "load_before": os.getloadavg()[0]}
            if method == "regkit":
                rec.update(run_regkit(data, pair, wd, extra))
            else:
                rec.update(run_ants(data, pair, wd, ANTS_TYPES[method], a.timeout, ct=method in ANTS_ON_SHIFTED_HU))
            if "field" in rec:
                rec.update(evaluate(a.evaluate, data, pair, rec))
            done.append(rec)
            with jsonl.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(f"{pair} {name}: " + ", ".join(f"{k}={rec[k]:.3f}" for k in ("dice_mean", "fold_pct", "wall_s", "reg_s")
                                                if isinstance(rec.get(k), float)) + (f" {rec.get('status')}" if "status" in rec else ""),
                  flush=True)
    md = table(done, f"{data.name}: {len(pairs)} pairs ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    a.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
