"""Threads, throughput and staged latency of a served set of models: one onnxruntime pool per session
(what ``OnnxStylizer`` does alone) against one pool per process (``ort_env.share_thread_pool``,
what ``styletrain serve`` does).

    python benchmarks/bench_thread_pool.py                      # the shipped models, default threads
    python benchmarks/bench_thread_pool.py --threads 8 --seconds 0 --staged 0   # thread counts only

Each mode runs in a fresh process (the shared pool is process-wide), in turn, ``--repeats`` times.
Per process: load every model in ``--models`` as ``serve`` does (this machine's variant), warm up
(which builds the staged sessions), count the threads, then

- ``img/s``: ``--clients`` threads call ``run_pixels`` on a ``--size`` px photo for ``--seconds``,
  each going round the models (several models busy at once, as in a server);
- ``staged s``: one image of ``--staged`` pixels a side (run in stages) on the first model, alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
    import json, os, sys, threading, time
    import numpy as np
    from styletrain.runtime import load_stylizer, ort_env
    from styletrain.runtime.variants import variant_files

    folder, mode, threads, clients, seconds, size, staged = sys.argv[1:]
    threads = int(threads) or None
    if mode == "shared":
        ort_env.share_thread_pool(threads)
    models = [load_stylizer(p, backend="onnxruntime", threads=threads) for p in variant_files(folder)]
    for m in models:
        m.warm_up()
    count = len(os.listdir("/proc/self/task"))
    rng = np.random.default_rng(0)
    def photo(h, w):
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        return np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:h, :w])
    image, done, stop = photo(int(size), int(size)), [], time.perf_counter() + float(seconds)
    def client(k):
        n = 0
        while time.perf_counter() < stop:
            m = models[(k + n) % len(models)]
            m.run_pixels(image, np.full(len(m.style_names), 1 / len(m.style_names), np.float32))
            n += 1
        done.append(n)
    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(k,)) for k in range(int(clients))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rate = sum(done) / (time.perf_counter() - start) if float(seconds) else None
    staged_seconds = None
    if int(staged):
        m = models[0]
        big = photo(int(staged), int(staged))
        t = time.perf_counter()
        m.run_pixels(big, np.full(len(m.style_names), 1 / len(m.style_names), np.float32))
        staged_seconds = time.perf_counter() - t
    sessions = sum(1 + len(getattr(m, "_stage_sessions", None) or []) for m in models)
    print(json.dumps({"threads": count, "sessions": sessions, "rate": rate, "staged": staged_seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=str(REPO / "checkpoints"))
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: one per physical core)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--staged", type=int, default=1100, help="side of the staged image (0: none)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; models {args.models}, "
          f"threads {args.threads or 'default'}, {args.clients} clients x {args.seconds:g} s at {args.size} px, "
          f"staged {args.staged} px")
    print("| mode | run | threads | sessions | img/s | staged s |")
    print("|---|---|---|---|---|---|")
    for repeat in range(args.repeats):
        for mode in (("own", "shared") if repeat % 2 == 0 else ("shared", "own")):
            out = subprocess.run([sys.executable, "-c", textwrap.dedent(WORKER), args.models, mode,
                                  str(args.threads), str(args.clients), str(args.seconds), str(args.size),
                                  str(args.staged)], capture_output=True, text=True, check=True, cwd=REPO)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rate = f"{r['rate']:.2f}" if r["rate"] is not None else "-"
            staged = f"{r['staged']:.2f}" if r["staged"] is not None else "-"
            print(f"| {mode} | {repeat + 1} | {r['threads']} | {r['sessions']} | {rate} | {staged} |", flush=True)


if __name__ == "__main__":
    main()
