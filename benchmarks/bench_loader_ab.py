"""A/B of the CPU loader between two source trees (e.g. main before a change, and the change):
`PoseLoader(device="cpu")` on the synthetic JPEG set, RTMPose stage 1, SimCC, batch 64, 2
threads, uncached and with the host cache, each run in its own process, the trees alternated
in every round so a shared machine's load drifts over both. Prints samples/s and CPU ms per
sample (process time). Run: ``python benchmarks/bench_loader_ab.py ROUNDS BEFORE_TREE
AFTER_TREE [--json F]`` (a tree: a checkout, e.g. from ``git archive REV | tar -x -C DIR``).
Each child runs in its tree (``python -c`` puts the working directory ahead of PYTHONPATH, so
run from a checkout it imported that checkout for both sides) and reports the posefeed it
imported; a child that imported another tree stops the run."""
import json, os, subprocess, sys, time
CHILD = r'''
import sys, time, json, os
import posefeed
from posefeed.bench.data import load_table, prepare_dataset, tile_table
from posefeed.pipelines import PoseLoader, rtmpose_schedule
from posefeed.targets import SimCC
cache = None if sys.argv[1] == "none" else sys.argv[1]
t = tile_table(load_table(prepare_dataset("synthetic")), 512)
ld = PoseLoader(t, [SimCC(input_size=(192, 256))], batch_size=64, device="cpu", num_threads=2,
                cache=cache, schedule=rtmpose_schedule(420))
def endless():
    while True:
        yield from ld
it = endless()
for _ in range(6): next(it)
c0, t0 = time.process_time(), time.perf_counter()
n = 0
while time.perf_counter() - t0 < float(sys.argv[2]):
    next(it); n += 64
dt = time.perf_counter() - t0
print(json.dumps({"sps": n / dt, "cpu_ms": 1e3 * (time.process_time() - c0) / n,
                  "posefeed": os.path.dirname(os.path.realpath(posefeed.__file__))}))
'''
trees = {"before": os.path.abspath(sys.argv[2]), "after": os.path.abspath(sys.argv[3])}
res = {}
for rnd in range(int(sys.argv[1])):
    for cache in ("none", "host"):
        for name, tree in trees.items():
            out = subprocess.run([sys.executable, "-c", CHILD, cache, "8"], env={**os.environ, "PYTHONPATH": tree},
                                 capture_output=True, text=True, cwd=tree)
            try:
                r = json.loads(out.stdout.strip().splitlines()[-1])
            except Exception:
                print(out.stderr[-2000:]); raise
            if os.path.dirname(r.pop("posefeed")) != os.path.realpath(tree):
                sys.exit(f"the {name} child did not import posefeed from {tree}")
            res.setdefault(f"{cache}/{name}", []).append(r)
            print(rnd, cache, name, round(r["sps"], 1), round(r["cpu_ms"], 2), os.getloadavg()[0], flush=True)
if "--json" in sys.argv:
    json.dump(res, open(sys.argv[sys.argv.index("--json") + 1], "w"), indent=1)
