"""`posefeed bench`: posefeed against the usual CPU loaders, side by side.

Modules:

- `reference`: the reference CPU loader (torch DataLoader + OpenCV, MMPose's top-down
  RTMPose stage-1 recipe, per-sample NumPy SimCC / MSRA targets), written as a careful user
  would write it.
- `runners`: one runner per loader (posefeed uncached / host cache / device cache / stages
  off, the reference, decode-only floors, training fed by each); each runs in its own process.
- `harness`: the subprocess per runner (spawn, time-out, kill its process group, read
  the result back); `measure`: the timed loop inside it (samples/s, CPU seconds per sample
  over the whole process tree, peak RSS / PSS via `Monitor`, GPU memory); `proc`: the
  ``/proc`` process-tree accounting both use.
- `suite`: the plan of runners and the report dict (the ``--json`` file); `report`: tables,
  JSON, PNG; `targets`: codec micro-benchmarks (``--targets``); `data`: PATH -> PoseTable.

How to read the output:

- Every loader gets the same data (the same table rows, tiled to >= 32 batches when small),
  the same recipe (RTMPose stage 1, input 192x256, SimCC targets), the same batch size and
  the same ``--threads`` (DALI threads for posefeed, DataLoader worker processes for the
  reference, pool threads for the decode floors), and its own fresh process, pinned to
  ``--threads`` CPUs when the machine has more.
- ``samples/s`` is measured after a warm-up (default ``2 x threads + 1`` batches, past the
  start-up wave), over ``--iters`` batches or ~``--seconds``. ``x ref`` divides by the
  reference loader's samples/s: the goal is >= 1.3x uncached, >= 3x with the cache.
- ``CPU ms/sample`` is user + system CPU of the runner and all its children (DataLoader
  workers, DALI threads) per sample: the cost that stays meaningful when the machine is
  busy; ``cores busy`` = CPU seconds / wall seconds (close to ``--threads`` when the loader
  keeps its cores busy; well below it means it waits on something, or the machine is shared).
- ``peak RSS MB (PSS)``: RSS summed over the process tree counts shared libraries once per
  worker; PSS shares them out, so it is the fairer memory figure for multi-process loaders.
- ``decode only`` is the floor for any loader that decodes every sample (one decode per
  instance, as top-down loaders do): no uncached loader can beat it on the same threads.
  "posefeed reaches N% of the decode-only floor" says how much headroom is left.
- The stage table subtracts runs with one stage switched off (targets, then augmentation,
  then everything but decode): a large ``crop normalise feed`` or ``augmentation`` row
  points at that part of the DALI graph. Differences of two noisy numbers: small negative
  values are noise.
- ``--train``: training steps/s of a small SimCC model on one batch kept in memory (the
  model's appetite) and fed by each loader; a fraction below 100% means the loader starves
  the model.
- Load averages before and after are printed: on a busy machine every number is noisy;
  compare runs from the same machine and time only, and use ``--repeat`` for medians.
"""
