"""Process-tree accounting from ``/proc`` (Linux; CPU time degrades to ``getrusage``
elsewhere): CPU seconds of a process and all its descendants (live, plus the reaped
children's ``cutime``/``cstime``), CPU per thread, RSS / PSS summed over the tree, and CPU
pinning. Units: seconds and MiB.
"""
from __future__ import annotations

import os
import resource

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    s = _read(f"/proc/{pid}/stat")
    if s is None:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    rest = s[s.rfind(")") + 2:].split()
    return rest  # rest[0] is field 3 (state); field n is rest[n - 3]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    tasks = _read_dir(f"/proc/{pid}/task")
    ok = False
    for tid in tasks:
        s = _read(f"/proc/{pid}/task/{tid}/children")
        if s is not None:
            ok = True
            kids.extend(int(x) for x in s.split())
    if ok:
        return kids
    # kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid
    for name in _read_dir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f is not None and int(f[1]) == pid:
                kids.append(int(name))
    return kids


def _read_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def process_tree(pid: int | None = None) -> list[int]:
    """``pid`` (default: this process) and all its live descendants."""
    root = os.getpid() if pid is None else pid
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of the tree: each live process's own time plus the time of
    its children that it has already reaped (``cutime``/``cstime``)."""
    total = 0
    found = False
    for p in process_tree(pid):
        f = _stat_fields(p)
        if f is None:
            continue
        found = True
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    if not found:  # no /proc: this process and its reaped children only
        a = resource.getrusage(resource.RUSAGE_SELF)
        b = resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
    return total / _TICK


def thread_cpu_seconds(pid: int | None = None) -> dict[str, float]:
    """CPU seconds per thread of ``pid`` (default: this process), keyed ``"tid name"``."""
    pid = os.getpid() if pid is None else pid
    out: dict[str, float] = {}
    for tid in _read_dir(f"/proc/{pid}/task"):
        s = _read(f"/proc/{pid}/task/{tid}/stat")
        if s is None:
            continue
        name = s[s.find("(") + 1:s.rfind(")")]
        f = s[s.rfind(")") + 2:].split()
        out[f"{tid} {name}"] = (int(f[11]) + int(f[12])) / _TICK
    return out


def cpu_breakdown(before: dict[str, float], after: dict[str, float], wall: float,
                  top: int = 10) -> dict[str, float]:
    """Cores used per thread name over ``wall`` seconds (threads with the same name summed,
    the busiest ``top``): which threads of a loader do the work."""
    by_name: dict[str, float] = {}
    for key, c in after.items():
        name = key.split(" ", 1)[1] if " " in key else key
        by_name[name] = by_name.get(name, 0.0) + c - before.get(key, 0.0)
    busiest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    return {k: round(v / wall, 3) for k, v in busiest if wall > 0 and v > 0}


def tree_memory_mb(pid: int | None = None, pss: bool = True) -> tuple[float, float | None]:
    """``(sum of RSS, sum of PSS)`` in MiB over the tree. RSS from ``statm`` (cheap); PSS
    (shared pages split between the processes that map them) from ``smaps_rollup``, which
    costs more to read: ``pss=False`` skips it (None)."""
    rss = 0.0
    pss_sum: float | None = 0.0 if pss else None
    for p in process_tree(pid):
        statm = _read(f"/proc/{p}/statm")
        if statm is None:
            continue
        r = int(statm.split()[1]) * _PAGE / 2**20
        rss += r
        if pss_sum is not None:
            s = None
            roll = _read(f"/proc/{p}/smaps_rollup")
            if roll is not None:
                for line in roll.splitlines():
                    if line.startswith("Pss:"):
                        s = float(line.split()[1]) / 1024
                        break
            pss_sum += s if s is not None else r
    return rss, pss_sum


def pin_cpus(threads: int) -> list[int] | None:
    """Restrict this process (and what it starts) to ``threads`` CPUs of its current affinity
    set; returns the CPUs, or None where affinity is not available or not narrower."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if threads <= 0 or threads >= len(cpus):
        return None
    chosen = cpus[:threads]
    os.sched_setaffinity(0, chosen)
    return chosen
