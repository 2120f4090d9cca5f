"""A/B of `bench_host_cost.measure` between source trees and look-ahead modes, each case in
its own process (run from outside any checkout, or the current directory shadows the trees),
the variants' order reversed every round (ABBA). Prints one line per case and writes JSON.

Run: ``python benchmarks/bench_host_cost_ab.py ROUNDS OUT.json NAME=TREE[:LOOKAHEAD] ...
[--graphs device_cache,host_cache,uncached] [--batch 64] [--batches 40]``; a tree is a
checkout (e.g. ``git worktree add /tmp/base REV``), ``LOOKAHEAD`` "thread" or "process"
(trees before the worker process have a thread only: leave it out)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])           # this script's folder: the same bench for every tree
import bench_host_cost as bh
kw = {} if sys.argv[4] == "-" else {"lookahead": sys.argv[4]}
print(json.dumps(bh.measure(sys.argv[2], int(sys.argv[3]), batches=int(sys.argv[5]), **kw)))
'''


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rounds", type=int)
    ap.add_argument("out", type=Path)
    ap.add_argument("variants", nargs="+", help="NAME=TREE[:LOOKAHEAD]")
    ap.add_argument("--graphs", default="device_cache,host_cache,uncached")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args(argv)
    variants = []
    for v in args.variants:
        name, _, rest = v.partition("=")
        tree, _, la = rest.partition(":")
        variants.append((name, str(Path(tree).resolve()), la or "-"))
    runs = []
    for rnd in range(args.rounds):
        order = variants if rnd % 2 == 0 else variants[::-1]
        for graph in args.graphs.split(","):
            for name, tree, la in order:
                load = os.getloadavg()[0]
                p = subprocess.run([sys.executable, "-c", CHILD, str(HERE), graph,
                                    str(args.batch), la, str(args.batches)],
                                   env={**os.environ, "PYTHONPATH": tree}, cwd="/",
                                   capture_output=True, text=True)
                if p.returncode:
                    print(p.stderr[-3000:], file=sys.stderr)
                    return 1
                r = json.loads(p.stdout.strip().splitlines()[-1])
                r.update(variant=name, tree=tree, lookahead=la, graph=graph, batch=args.batch,
                         round=rnd, load=load, time=time.strftime("%H:%M:%S", time.gmtime()))
                runs.append(r)
                print(f"r{rnd} {graph:12s} {name:8s} main {r['host_ms_per_batch']:.3f} (mean "
                      f"{r.get('host_ms_per_batch_mean', float('nan')):.3f}) one thread "
                      f"{r['serial_host_ms_per_batch']:.3f} worker {r.get('worker_ms_per_batch')}"
                      f" calls {r['python_calls_per_batch']}/{r.get('main_calls_per_batch')} "
                      f"load {load:.1f}", flush=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
