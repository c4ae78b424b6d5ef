"""Whole-process time of a cohort: ``regkit register --pairs`` with the optimiser against the
same command with a trained cascade and ``--refine``, on synth.py pairs, rounds interleaved.

A pipeline that registers many pairs runs one process per cohort: the model is loaded once and
the interpreter, torch and regkit are imported once, so what differs is the registration itself.
Each round runs both commands back to back (the order alternates between rounds, so machine load
hits both alike) and records the wall time of each whole process. Dice is scored afterwards on
every pair's ``warped_labels.nii.gz`` (``--evaluate ../shared/bench/evaluate.py``; otherwise
regkit's own mean Dice over the labels).

    python benchmarks/cohort_timing.py runs/data/dev2mm --model runs/g36/best.safetensors --refine 40 \\
        --rounds 3 --work /tmp/cohort [--evaluate ../shared/bench/evaluate.py]
    python benchmarks/cohort_timing.py --pool /tmp/cohort /tmp/cohort2    # per-pair times of earlier runs, pooled
    python benchmarks/cohort_timing.py runs/data/dev2mm --model runs/g36/best.safetensors --refine 40 \
        --rounds 10 --work /tmp/cohort_sbs --side-by-side      # both at once, one core and one thread each

``--side-by-side`` runs the two commands AT THE SAME TIME, each pinned to its own core
(``taskset``) with one thread, and swaps the cores every round: on a shared machine whose speed
drifts over minutes, both then see the same conditions, so the per-round difference is not
buried under that drift (measured with the sequential design: ±6 s per 8-pair round). It
compares the two on one core each, not on two.

Besides the whole processes, each pair's registration time inside them (``cohort_rank0.csv``:
the optimiser's call, or the prediction plus the refinement) is compared pair by pair within
each round — the same measure as ``run_benchmark.py``'s "registration call".
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def write_manifest(data: Path, path: Path) -> list:
    pairs = sorted(p.name[: -len("_moving.nii.gz")] for p in data.glob("pair*_moving.nii.gz"))
    rows = ["moving,fixed,moving_labels,fixed_labels"]
    for pair in pairs:
        rows.append(",".join(str((data / f"{pair}_{role}.nii.gz").resolve())
                             for role in ("moving", "fixed", "moving_labels", "fixed_labels")))
    path.write_text("\n".join(rows) + "\n")
    return pairs


def mean_dice(data: Path, pair: str, out: Path, evaluator) -> float:
    warped = out / "warped_labels.nii.gz"
    fixed = data / f"{pair}_fixed_labels.nii.gz"
    if evaluator is not None:
        q = subprocess.run([sys.executable, str(evaluator), "--fixed-labels", str(fixed), "--warped-labels", str(warped),
                            "--field", str(out / "field.nii.gz")], capture_output=True, text=True, check=True)
        return float(json.loads(q.stdout.strip().splitlines()[-1])["dice_mean"])
    from regkit.io.images import load_label
    from regkit.metrics import dice, summarize

    return float(summarize(dice(load_label(fixed), load_label(warped))))


def per_pair_lines(works) -> list:
    """Pair-by-pair registration seconds (``cohort_rank0.csv``) of every round of ``works``."""
    import csv

    diffs, seconds = [], {}
    for work in works:
        for round_dir in sorted(Path(work).glob("round*")):
            rows = {v.name: {r["pair"]: float(r["seconds"]) for r in csv.DictReader((v / "cohort_rank0.csv").open())}
                    for v in round_dir.iterdir() if (v / "cohort_rank0.csv").is_file()}
            if len(rows) != 2:
                continue
            (first, a), (second, b) = sorted(rows.items(), key=lambda kv: kv[0] != "optimiser")
            for pair in a:
                diffs.append(b[pair] - a[pair])
                seconds.setdefault(first, []).append(a[pair])
                seconds.setdefault(second, []).append(b[pair])
    if not diffs:
        return ["no rounds with both variants found"]
    (first, a), (second, b) = seconds.items()
    return [f"registration per pair inside the processes ({len(diffs)} pairs): median {statistics.median(a):.2f} s "
            f"({first}) vs {statistics.median(b):.2f} s ({second}), summed {sum(a):.1f} vs {sum(b):.1f} s; "
            f"{second} − {first} per pair: median {statistics.median(diffs):+.2f} s, faster on {sum(d < 0 for d in diffs)} of {len(diffs)}"]


def run_side_by_side(work: Path, r: int, manifest: Path, variants: dict, names: list) -> dict:
    """Start both commands at once, ``names[0]`` on core ``r % 2`` and ``names[1]`` on the other,
    one thread each; the wall seconds of each whole process."""
    import os

    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("--side-by-side needs taskset (util-linux) and two cores")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs, started, ended = {}, {}, {}
    for k, name in enumerate(names):
        core = sorted(os.sched_getaffinity(0))[(r + k) % 2]
        out = work / f"round{r}" / name
        cmd = ["taskset", "-c", str(core), "regkit", "register", "--pairs", str(manifest), "--out", str(out),
               "--device", "cpu", "--no-progress", *variants[name]]
        log = (work / f"round{r}" / f"{name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        started[name] = time.perf_counter()
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    while len(ended) < len(procs):
        for name, p in procs.items():
            if name not in ended and p.poll() is not None:
                ended[name] = time.perf_counter()
                if p.returncode != 0:
                    raise SystemExit(f"{name} failed (exit {p.returncode}); see {work / f'round{r}' / f'{name}.log'}")
        time.sleep(0.02)
    return {name: ended[name] - started[name] for name in names}


def round_summary(diffs: list) -> str:
    """Mean, standard deviation and paired t of per-round whole-process differences."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"mean {mean:+.2f} s"
    sd = statistics.stdev(diffs)
    t = mean / (sd / len(diffs) ** 0.5) if sd > 0 else float("-inf" if mean < 0 else "inf")
    return f"mean {mean:+.2f} s, sd {sd:.2f} s, paired t = {t:.1f} ({len(diffs)} rounds)"


def whole_process_lines(works) -> list:
    """Per-round whole-process differences recorded in each work folder's ``timings.json``."""
    diffs = []
    for work in works:
        path = Path(work) / "timings.json"
        if path.is_file():
            seconds = json.loads(path.read_text())["seconds_per_process"]
            (first, a), (second, b) = sorted(seconds.items(), key=lambda kv: kv[0] != "optimiser")
            diffs += [y - x for x, y in zip(a, b)]
    if not diffs:
        return []
    return [f"whole processes, {second} − {first} per round: faster in {sum(d < 0 for d in diffs)} of {len(diffs)}; "
            + round_summary(diffs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, nargs="?", help="a synth.py folder (pairNN_{moving,fixed}[_labels].nii.gz)")
    ap.add_argument("--pool", type=Path, nargs="+", help="only pool the per-pair times of earlier --work folders")
    ap.add_argument("--model", help="checkpoint of the cascade")
    ap.add_argument("--refine", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, help="scratch folder (replaced)")
    ap.add_argument("--evaluate", type=Path, default=None, help="the benchmark's evaluate.py (else regkit's Dice)")
    ap.add_argument("--side-by-side", action="store_true",
                    help="run both commands at once, each on its own core with one thread (cores swapped every round)")
    a = ap.parse_args()
    if a.pool:
        from pool_runs import stage_seconds  # benchmarks/ is on sys.path when run as a script

        rounds = [r for w in a.pool for r in sorted(Path(w).glob("round*"))]
        print("\n".join(whole_process_lines(a.pool) + per_pair_lines(a.pool) + [stage_seconds(rounds)]))
        return
    if a.data is None or a.model is None or a.work is None:
        ap.error("DATA, --model and --work are needed (or --pool)")

    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    manifest = a.work / "pairs.csv"
    pairs = write_manifest(a.data, manifest)
    variants = {"optimiser": [], f"cascade+refine{a.refine}": ["--model", a.model, "--refine", str(a.refine)]}
    names = list(variants)
    seconds = {n: [] for n in names}
    for r in range(a.rounds):
        if a.side_by_side:
            for name, t in run_side_by_side(a.work, r, manifest, variants, names).items():
                seconds[name].append(t)
                print(f"round {r} {name}: {t:.1f} s", flush=True)
            continue
        for name in (names if r % 2 == 0 else names[::-1]):
            out = a.work / f"round{r}" / name
            cmd = ["regkit", "register", "--pairs", str(manifest), "--out", str(out), "--device", "cpu", "--no-progress",
                   *variants[name]]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            seconds[name].append(time.perf_counter() - t0)
            print(f"round {r} {name}: {seconds[name][-1]:.1f} s", flush=True)
    dice = {n: statistics.mean(mean_dice(a.data, p, a.work / "round0" / n / f"pair{i:03d}", a.evaluate)
                               for i, p in enumerate(pairs, start=1)) for n in names}
    diffs = [b - o for o, b in zip(seconds[names[0]], seconds[names[1]])]
    how = "side by side, one core and one thread each" if a.side_by_side else "one after the other, all cores"
    print(f"\n{len(pairs)} pairs per process, {a.rounds} rounds, whole `regkit register --pairs` processes ({how})")
    print("| | " + " | ".join(names) + " |\n|---|---|---|")
    print(f"| Dice (mean over pairs{', evaluate.py' if a.evaluate else ''}) | " + " | ".join(f"{dice[n]:.4f}" for n in names) + " |")
    print("| seconds per process, each round | " + " | ".join(", ".join(f"{s:.1f}" for s in seconds[n]) for n in names) + " |")
    print("| seconds per pair (median round) | " + " | ".join(f"{statistics.median(seconds[n]) / len(pairs):.2f}" for n in names) + " |")
    print(f"\n{names[1]} − {names[0]}, per round: " + ", ".join(f"{d:+.1f} s" for d in diffs)
          + f"; median {statistics.median(diffs):+.1f} s per process ({statistics.median(diffs) / len(pairs):+.2f} s per pair), "
          f"faster in {sum(d < 0 for d in diffs)} of {len(diffs)} rounds; {round_summary(diffs)}")
    print("\n".join(per_pair_lines([a.work])))
    (a.work / "timings.json").write_text(json.dumps({"seconds_per_process": seconds, "dice": dice}, indent=1))


if __name__ == "__main__":
    main()
