"""Kill-anywhere soak (issue 20): interrupt ``facecraft demo`` at random moments, resume, compare.

A reference demo runs uninterrupted. Then each *chain* starts the same demo in an empty run
directory, kills it (SIGKILL or SIGTERM, to the command's process only: its pool workers must end by
themselves) after a random delay (by default uniform up to twice the reference's wall time over the
number of kills, so that the kills spread over the run as it progresses), restarts it (``--workers``
1 or 2 at random), kills it again, ... and finally lets it finish. Every measured number of the
chain's results.json must equal the reference's bit for
bit (times and memory apart). Prints one JSON line per chain and a summary line::

    python benchmarks/kill_soak.py --profile tiny --out /tmp/soak --chains 2 --kills 10

The resume test of the test suite (tests/experiments/test_resume.py) runs a short version of
:func:`chain` on one defence setting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

#: values of a results.json that measure the machine, not the study
UNMEASURED = (
    "attack_seconds",
    "protect_seconds",
    "train_scenario_seconds",
    "wall_seconds",
    "peak_rss_mb",
)


def demo_command(out: Path, profile: str, workers: int, extra: Sequence[str] = ()) -> List[str]:
    """The ``facecraft demo`` command line run by this script (through this interpreter)."""
    return [
        sys.executable,
        "-m",
        "facecraft.cli",
        "demo",
        "--profile",
        profile,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        str(workers),
        *extra,
    ]


def measured(results: Dict[str, Any]) -> Dict[str, Any]:
    """``results`` without the machine-dependent values (:data:`UNMEASURED`), rows keyed by setting
    and attack."""
    rows = {
        (r["defense"], str(r["param"]), r["attack"]): {
            k: v for k, v in r.items() if k not in UNMEASURED
        }
        for r in results["rows"]
    }
    rest = {k: v for k, v in results.items() if k not in UNMEASURED + ("rows",)}
    return {"rows": rows, **rest}


def differences(reference: Dict[str, Any], got: Dict[str, Any]) -> List[str]:
    """Names of the measured values that differ between two results.json (empty: bit-identical)."""
    a, b = measured(reference), measured(got)
    out = [f"rows: missing {k}" for k in a["rows"].keys() - b["rows"].keys()]
    out += [f"rows: extra {k}" for k in b["rows"].keys() - a["rows"].keys()]
    for key in a["rows"].keys() & b["rows"].keys():
        ra, rb = a["rows"][key], b["rows"][key]
        out += [f"{key}: {k}" for k in sorted(ra.keys() | rb.keys()) if ra.get(k) != rb.get(k)]
    out += [k for k in sorted(a.keys() | b.keys()) if k != "rows" and a.get(k) != b.get(k)]
    return out


def run_to_end(cmd: List[str], log) -> float:
    """Run ``cmd`` to completion; its wall seconds. Raises ``RuntimeError`` if it fails."""
    t0 = time.time()
    rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {rc}")
    return time.time() - t0


def chain(
    out: Path,
    profile: str,
    kills: int,
    max_delay: float,
    rng: random.Random,
    extra: Sequence[str] = (),
    log=subprocess.DEVNULL,
) -> List[Dict[str, Any]]:
    """Kill the demo in ``out`` ``kills`` times at random moments, then let it finish.

    Returns one record per kill: delay, signal, workers, and whether the command had already ended
    by itself before the signal (then the kill is a no-op).
    """
    events = []
    for _ in range(kills):
        workers = rng.choice([1, 2])
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        delay = rng.uniform(1.0, max_delay)
        proc = subprocess.Popen(
            demo_command(out, profile, workers, extra), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            finished = False
            proc.send_signal(sig)
            proc.wait()
        events.append(
            {
                "delay_s": round(delay, 1),
                "signal": sig.name,
                "workers": workers,
                "finished_first": finished,
            }
        )
    run_to_end(demo_command(out, profile, rng.choice([1, 2]), extra), log)
    return events


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--out", type=Path, required=True, help="scratch folder (emptied first)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--kills", type=int, default=10, help="kills per chain")
    ap.add_argument(
        "--max-delay",
        type=float,
        default=None,
        help="seconds; each kill waits uniform(1, this) "
        "(default: twice the reference run's wall time "
        "over --kills, so a chain's kills spread over the run as it progresses)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    extra = ["--data-root", args.data_root] if args.data_root else []
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rng = random.Random(args.seed)
    with open(args.out / "soak.log", "w") as log:
        ref_dir = args.out / "reference"
        ref_secs = run_to_end(demo_command(ref_dir, args.profile, 1, extra), log)
        reference = json.loads((ref_dir / "results.json").read_text())
        print(
            json.dumps({"reference_wall_s": round(ref_secs, 1), "rows": len(reference["rows"])}),
            flush=True,
        )
        total, failed = 0, 0
        for c in range(args.chains):
            run = args.out / f"chain-{c}"
            t0 = time.time()
            max_delay = args.max_delay or 2 * ref_secs / max(1, args.kills)
            events = chain(run, args.profile, args.kills, max_delay, rng, extra, log)
            diff = differences(reference, json.loads((run / "results.json").read_text()))
            kills = sum(not e["finished_first"] for e in events)
            total += kills
            failed += bool(diff)
            print(
                json.dumps(
                    {
                        "chain": c,
                        "kills": kills,
                        "wall_s": round(time.time() - t0, 1),
                        "identical": not diff,
                        "differences": diff[:20],
                        "events": events,
                    }
                ),
                flush=True,
            )
    print(
        json.dumps({"chains": args.chains, "kills": total, "chains_differing": failed}), flush=True
    )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
