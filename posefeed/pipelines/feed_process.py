"""The feed's look-ahead in a worker process: order, augmentation parameters and every
field the graph reads that needs no image bytes or frames, for the batches after the one
DALI runs, computed beside the loader's process instead of in a thread of it.

Why a process: every torch op of the training loop (and of the loader) releases and
re-takes the interpreter lock; while a Python thread of the same process is busy, a 1.3 us
op cost the main thread 7.5 us of CPU and ~240 us of wall time (measured; a "GIL convoy").
A look-ahead thread therefore slowed the main thread instead of taking the parameter
sampling (~1 ms a batch of 64) off it. The worker holds no lock the main thread needs.

How:

* The child is a fresh interpreter (``subprocess``: fork + exec, so no fork of DALI's or
  CUDA's threads, and, unlike multiprocessing's "spawn", no re-import of the user's
  ``__main__``); it imports NumPy and the parameter code only (`posefeed.pipelines.fields`:
  no torch, DALI, CuPy or pandas; `worker_modules` lists them, a test checks).
* Memory: two anonymous shared files (``memfd_create``): the table's arrays
  (`SampleTables`, written once by the parent, mapped read-only by the child: nothing is
  pickled) and a ring of ``slots`` batch slots, each with a fixed layout per field
  (`Layout`), written once by the child, read in place by the parent (NumPy views). Nothing
  has a name in ``/dev/shm``, so nothing leaks, even when either process is killed.
* Messages: a Unix ``SOCK_SEQPACKET`` socket pair (one ``recv`` = one message), fixed-size
  structs, so a batch costs the parent a few C calls: parent -> child ``(START, gen, epoch,
  batch)`` (produce from there on, crossing epoch ends; all slots free), ``(FREE, gen,
  slot)``, ``(STOP,)``; child -> parent ``(BATCH, gen, slot, epoch, batch, n, cpu_s)`` or
  ``(ERROR, gen, epoch, batch)`` followed by the traceback's text. ``gen`` tells the
  batches of an old start (after a seek) from the current ones. Set-up (the parent's
  ``sys.path``, then the spec and the layouts) is pickled once; the child's first message
  is the file of the posefeed it imported, which must be the parent's (a relative
  ``sys.path`` entry or another install would otherwise give it another copy).
* Slot lifetime: the parent frees a batch's slot ``hold`` batches later (DALI copies fed
  CPU inputs at feed time; with the OpenCV stage's crop ahead its pool reads them until the
  graph collects the batch, within DALI's prefetch depth); the child writes only free slots
  and stops when none is.
* Failures never hang: every wait polls the child and gives up after ``timeout`` seconds;
  a child that exits (crash, kill) or cannot start is a `PipelineError` naming its exit
  code and what it was preparing; an exception in the child's computation comes back as a
  `PipelineError` with the child's traceback. The child exits when the parent closes the
  socket (``close()``, garbage collection, or the parent's own death).
"""
from __future__ import annotations

import errno
import mmap
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import weakref
from collections import deque
from dataclasses import dataclass, fields as dc_fields
from typing import Any, Sequence

import numpy as np

import posefeed
from posefeed.pipelines.errors import PipelineError
from posefeed.pipelines.fields import Packing, Plan, SampleTables, SourceSpec, batch_fields

#: batches the child prepares ahead of the one the parent takes
AHEAD = 2
#: a batch's slot is reused this many batches after the parent took it: DALI's prefetch
#: queue (`graph.PREFETCH`, 2: not imported here, the child imports no DALI), the iteration
#: running and one spare (see the module docstring); `graph.build_pipeline` refuses a
#: deeper prefetch with a worker
HOLD = 4
#: seconds a wait for the child may take before it is an error (start-up, or one batch)
TIMEOUT = 120.0
#: seconds between checks that the child still runs, while waiting
POLL_S = 0.25
#: the field of each slot holding the batch's sample ids ``(B,)`` int64
IDS = "_ids"
_ALIGN = 64

#: message kinds, and their layouts: parent -> child 4 int64; child -> parent 6 int64 and
#: a float64 (an error: the traceback's text follows in a second message)
START, FREE, STOP, READY, BATCH, ERROR = range(6)
_TO_CHILD = struct.Struct("<4q")
_TO_PARENT = struct.Struct("<6qd")
#: the largest message (the pickled set-up, a traceback)
_MAX_MSG = 1 << 20
#: the end of a traceback the child sends (one SOCK_SEQPACKET message must fit the socket's
#: send buffer, ~208 KiB by default on Linux: a longer one fails with EMSGSIZE)
_MAX_TRACEBACK = 1 << 16
#: the folder this process's posefeed package is in (the child imports it from there)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(posefeed.__file__)))

# the child's first lines: the parent's sys.path (before anything of posefeed is imported:
# the parent's posefeed root first, every entry absolute, `_child_path`), then ``posefeed``
# itself, whose file (or the import's traceback) the child reports (`_check_posefeed`), then
# the worker (argv: the socket's and the two shared files' descriptors)
_BOOT = ("import pickle, signal, socket, sys, time\n"
         # a terminal's Ctrl-C reaches the whole process group: the parent decides (the
         # child ends when the parent closes the socket)
         "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
         "sock = socket.socket(fileno=int(sys.argv[1]))\n"
         "sys.path[:] = pickle.loads(sock.recv(1 << 20))\n"
         "t0 = time.perf_counter()\n"
         "try:\n"
         "    import posefeed\n"
         "except BaseException:\n"
         "    import traceback\n"
         "    sock.sendall(pickle.dumps(('error', traceback.format_exc()[-(1 << 16):])))\n"
         "    sys.exit(1)\n"
         "sock.sendall(pickle.dumps(('ok', str(getattr(posefeed, '__file__', None)))))\n"
         "from posefeed.pipelines.feed_process import worker_main\n"
         "worker_main(sock, int(sys.argv[2]), int(sys.argv[3]), t0)\n")


def _child_path() -> list:
    """The ``sys.path`` the child starts with: this process's posefeed root first (the child
    must run this copy, also when ``sys.path`` would find another one), then this process's
    ``sys.path`` with relative entries (``''``: ``python -c``, a notebook) made absolute
    against this process's working directory (the child's may differ after ``os.chdir``)."""
    return [_ROOT] + [os.path.abspath(p) if isinstance(p, str) else p for p in sys.path]


def _check_posefeed(report: tuple) -> str:
    """The child's posefeed file, from its start-up report ``("ok", file)`` or
    ``("error", traceback)``; `PipelineError` when it could not import posefeed or imported
    another copy than this process's."""
    kind, text = report
    if kind != "ok":
        raise PipelineError(f"cannot import posefeed in the feed worker process "
                            f"({sys.executable!r}; PoseLoader(lookahead='thread') avoids the "
                            f"worker):\n{text}")
    mine = os.path.abspath(posefeed.__file__)
    if os.path.realpath(text) != os.path.realpath(mine):
        raise PipelineError(f"the feed worker process imported posefeed from {text!r}, this "
                            f"process from {mine!r}: the worker would compute another "
                            f"version's batches (check sys.path, PYTHONPATH and editable "
                            f"installs; PoseLoader(lookahead='thread') avoids the worker)")
    return text


@dataclass(frozen=True)
class Layout:
    """Where each array of a block lives: ``entries`` ``(name, offset, shape, dtype)``, in
    bytes from the block's start; ``nbytes`` the block's size (a multiple of 64)."""

    entries: tuple[tuple[str, int, tuple[int, ...], str], ...]
    nbytes: int

    @classmethod
    def of(cls, arrays: dict[str, tuple[tuple[int, ...], Any]]) -> "Layout":
        """The layout of ``{name: (shape, dtype)}``, each array 64-byte aligned."""
        entries, off = [], 0
        for name, (shape, dtype) in arrays.items():
            dt = np.dtype(dtype)
            shape = tuple(int(s) for s in shape)
            entries.append((name, off, shape, dt.str))
            size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            off += -(-max(size, 1) // _ALIGN) * _ALIGN
        return cls(tuple(entries), max(off, _ALIGN))

    def views(self, buf, base: int = 0) -> dict[str, np.ndarray]:
        """NumPy views of the block at byte ``base`` of ``buf`` (an mmap)."""
        return {name: np.ndarray(shape, dtype=np.dtype(dt), buffer=buf, offset=base + off)
                for name, off, shape, dt in self.entries}


def slot_layout(sample: dict[str, np.ndarray], batch_size: int) -> Layout:
    """One batch slot for the fields of ``sample`` (a computed batch: arrays whose first
    axis is the batch) with ``batch_size`` rows each, plus the sample ids (`IDS`)."""
    arrays = {IDS: ((batch_size,), np.int64)}
    for name, a in sample.items():
        a = np.asarray(a)
        if a.ndim == 0:
            raise ValueError(f"feed field {name!r} is a scalar; a slot holds per-sample arrays")
        arrays[name] = ((batch_size,) + a.shape[1:], a.dtype)
    return Layout.of(arrays)


def table_layout(tables: SampleTables) -> Layout:
    return Layout.of({f.name: (np.shape(getattr(tables, f.name)),
                               np.asarray(getattr(tables, f.name)).dtype)
                      for f in dc_fields(tables)})


def _shared(nbytes: int, name: str) -> tuple[int, mmap.mmap]:
    """An anonymous shared file of ``nbytes`` and the parent's mapping of it."""
    fd = os.memfd_create(name)
    try:
        os.ftruncate(fd, nbytes)
        return fd, mmap.mmap(fd, nbytes)
    except BaseException:
        os.close(fd)
        raise


def _write(layout: Layout, buf: mmap.mmap, tables: SampleTables) -> None:
    for name, view in layout.views(buf).items():
        view[...] = getattr(tables, name)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _shutdown(proc: subprocess.Popen, sock: socket.socket, owner: int) -> None:
    """Stop the child: ask, then wait a little, then kill (a finalizer: no reference to the
    `FeedProcess`). In another process than ``owner`` (the pid that started the child: a
    child of ``os.fork()`` runs this finalizer too, at its exit or garbage collection) only
    that process's copy of the socket is closed: the worker stays the owner's."""
    if os.getpid() != owner:
        try:
            sock.close()
        except OSError:
            pass
        return
    try:
        sock.send(_TO_CHILD.pack(STOP, 0, 0, 0), socket.MSG_DONTWAIT)
    except OSError:
        pass
    try:
        sock.close()              # EOF for the child even if it missed STOP
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class FeedProcess:
    """The parent's side of the worker (see the module docstring).

    ``tables``, ``spec``: what the fields are a pure function of (with the epoch and the
    batch); ``fields``: the fields it computes (no "images"), fed packed with ``packing``;
    ``sample``: one computed batch (`batch_fields` of the same fields and packing) that fixes
    the slot layout (its keys are the slot's fields)."""

    def __init__(self, tables: SampleTables, spec: SourceSpec, fields: Sequence[str],
                 sample: dict[str, np.ndarray], packing: Packing | None = None,
                 ahead: int = AHEAD, hold: int = HOLD, timeout: float = TIMEOUT):
        self.spec, self.fields, self.packing = spec, tuple(fields), packing
        self.hold, self.timeout = int(hold), float(timeout)
        self.slots = self.hold + int(ahead)
        self.layout = slot_layout(sample, spec.batch_size)
        self.num_batches = len(Plan(tables.num_samples, spec))
        tlayout = table_layout(tables)
        t_fd, t_buf = _shared(tlayout.nbytes, "posefeed-feed-table")
        try:
            s_fd, self._buf = _shared(self.slots * self.layout.nbytes, "posefeed-feed-slots")
        except BaseException:
            os.close(t_fd)
            t_buf.close()
            raise
        _write(tlayout, t_buf, tables)
        #: bytes of the table's arrays shared with the child (written once)
        self.table_bytes = tlayout.nbytes
        #: per slot, the fields as NumPy views (``batch_size`` rows)
        self.views = [self.layout.views(self._buf, s * self.layout.nbytes)
                      for s in range(self.slots)]
        t0 = time.perf_counter()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(t_fd), str(s_fd)],
                pass_fds=(theirs.fileno(), t_fd, s_fd), stdin=subprocess.DEVNULL)
        except OSError as e:
            mine.close()
            raise PipelineError(f"cannot start the feed worker process ({sys.executable!r}): "
                                f"{e}; PoseLoader(lookahead='thread') prepares the batches in "
                                f"a thread instead") from e
        finally:
            theirs.close()
            os.close(t_fd)
            os.close(s_fd)
            t_buf.close()         # the child maps its own view; the parent keeps none
        self._sock = mine
        mine.setblocking(False)       # waits go through `_wait` (poll, with a timeout)
        self._poller = select.poll()      # poll, not select: any fd number (select: < 1024)
        self._poller.register(mine.fileno(), select.POLLIN)
        self._out_poller = select.poll()
        self._out_poller.register(mine.fileno(), select.POLLOUT)
        self._finalizer = weakref.finalize(self, _shutdown, self._proc, mine, os.getpid())
        self.pid = self._proc.pid
        self._msg = bytearray(_TO_PARENT.size)
        self._gen = -1                # the set-up's messages (the child reports -1)
        self._send_raw(pickle.dumps(_child_path()), "starting")
        self._send_raw(pickle.dumps((spec, self.fields, packing, tlayout, self.layout,
                                     self.slots)), "starting")
        try:
            #: the file of the posefeed the child imported (this process's, checked)
            self.child_posefeed = _check_posefeed(pickle.loads(self._recv_text("starting")))
        except PipelineError:
            self._finalizer()
            raise
        kind, pid, _, _, _, _, import_s = self._recv("starting")
        #: seconds from starting the child until it was ready, and the child's own time from
        #: before its imports (NumPy, the parameter code) to ready
        self.start_s = time.perf_counter() - t0
        self.child_import_s = import_s
        #: the heavy modules the child imported (none expected; `worker_modules`)
        self.child_modules = pickle.loads(self._recv_text("starting"))
        self._gen = 0
        self._expect: tuple[int, int] | None = None   # the batch the child sends next
        self._held: deque = deque()                   # slots taken, oldest first
        self._pending: deque = deque()                # messages received by `peek`
        #: the child's CPU seconds per batch, newest last (the worker's share of the cost)
        self.cpu_s: deque = deque(maxlen=256)

    # -- waiting --------------------------------------------------------------------------
    def _wait(self, doing: str, deadline: float, events: int = select.POLLIN) -> None:
        """Wait until the socket has ``events`` (or `POLL_S`); a child that is gone, or no
        message before ``deadline``, raises `PipelineError`."""
        poller = self._poller if events == select.POLLIN else self._out_poller
        ready = poller.poll(1e3 * POLL_S)
        if ready:
            return
        if self._proc.poll() is not None:
            self._died(doing)
        if time.monotonic() > deadline:
            pid = self.pid
            self._proc.kill()       # a stalled child is not reused: the next start is fresh
            self._finalizer()
            raise PipelineError(f"the feed worker process (pid {pid}) sent nothing in "
                                f"{self.timeout:.0f} s while {doing}; it was stopped")

    def _recv(self, doing: str) -> tuple:
        """The child's next message (a tuple of `_TO_PARENT`); an error message of the
        current stream raises."""
        deadline = time.monotonic() + self.timeout
        sock, buf = self._sock, self._msg
        while True:
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                self._wait(doing, deadline)
                continue
            except OSError:
                self._died(doing)
            if n != len(buf):
                self._died(doing)               # EOF (0 bytes): the child is gone
            msg = _TO_PARENT.unpack(buf)
            if msg[0] == ERROR:
                text = self._recv_text(doing)
                if msg[1] == self._gen:
                    self._failed(msg, text, doing)
                continue
            return msg

    def _failed(self, msg: tuple, text: bytes, doing: str):
        self._expect = None                     # the child stopped this stream
        raise PipelineError(f"the feed worker process (pid {self.pid}) failed {doing}:\n"
                            f"{text.decode(errors='replace')}")

    def _recv_text(self, doing: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                data = self._sock.recv(_MAX_MSG)
            except (BlockingIOError, InterruptedError):
                self._wait(doing, deadline)
                continue
            except OSError:
                self._died(doing)
            if not data:
                self._died(doing)
            return data

    def _died(self, doing: str):
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        self._finalizer()
        raise PipelineError(f"the feed worker process (pid {self.pid}) {_exit_text(code)} "
                            f"while {doing}; the loader's own process is fine: iterate again "
                            f"to start a new worker")

    @property
    def alive(self) -> bool:
        """The child runs and has not been closed."""
        return self._finalizer.alive and self._proc.poll() is None

    @property
    def closed(self) -> bool:
        """`close` ran (or the child was found dead): a new worker is needed."""
        return not self._finalizer.alive

    # -- the stream -----------------------------------------------------------------------
    def seek(self, epoch: int, batch: int) -> None:
        """Produce from ``batch`` of ``epoch`` on (nothing happens when that is the batch the
        child prepares next anyway, e.g. at an epoch's end)."""
        key = (int(epoch), int(batch))
        if key == self._expect:
            return
        self._gen += 1
        self._held.clear()
        self._pending.clear()
        self._send(START, self._gen, key[0], key[1], doing="starting a stream")
        self._expect = key

    def take(self, epoch: int, batch: int) -> tuple[int, int, dict[str, np.ndarray]]:
        """``(slot, n, views)`` of batch ``batch`` of ``epoch`` (``n`` samples; the views
        hold ``batch_size`` rows, the first ``n`` valid) once the child wrote it; frees the
        slot taken `hold` batches before."""
        key = (epoch, batch)
        if key != self._expect:
            self.seek(epoch, batch)
        held = self._held
        if len(held) >= self.hold:
            self._send_raw(_TO_CHILD.pack(FREE, self._gen, held.popleft(), 0), "freeing a slot")
        if self._pending:
            msg = self._pending.popleft()
        else:                                # the message is most often there already
            try:
                n = self._sock.recv_into(self._msg)
            except (BlockingIOError, InterruptedError):
                n = -1
            except OSError:
                n = 0                        # the child is gone
            msg = _TO_PARENT.unpack(self._msg) if n == len(self._msg) else None
            if msg is None or msg[0] != BATCH or msg[1] != self._gen:
                msg = self._next_msg(f"preparing epoch {epoch} batch {batch}", msg, n)
        if msg[0] == "error":
            self._failed(*msg[1:])
        _, _, slot, e, b, n, cpu = msg
        if e != epoch or b != batch:
            self._expect = None
            raise PipelineError(f"the feed worker process sent epoch {e} batch {b}, expected "
                                f"epoch {key[0]} batch {key[1]}")
        self._held.append(slot)
        self.cpu_s.append(cpu)
        self._expect = (e, b + 1) if b + 1 < self.num_batches else (e + 1, 0)
        return slot, n, self.views[slot]

    def _next_msg(self, doing: str, got: tuple | None = None, n: int = -1) -> tuple:
        """The child's next message of the current stream (older streams' are dropped: their
        slots are free again anyway); ``got``, ``n``: a message read already and its size
        (``n == 0``: end of file; -1: none)."""
        if n == 0 or 0 < n < len(self._msg):
            self._died(doing)
        if got is not None and got[0] == ERROR:
            text = self._recv_text(doing)
            if got[1] == self._gen:
                self._failed(got, text, doing)
        while True:
            msg = self._recv(doing)
            if msg[1] == self._gen:
                return msg

    def peek(self) -> tuple[tuple[int, int], int, dict[str, np.ndarray]] | None:
        """``((epoch, batch), n, views)`` of the next batch when the child has sent it
        already (it is not taken: `take` returns it next), else ``None``; never waits."""
        if not self._pending:
            buf = self._msg
            try:
                while self._sock.recv_into(buf) == len(buf):
                    msg = _TO_PARENT.unpack(buf)
                    if msg[0] == ERROR:      # `take` raises it, in order
                        text = self._recv_text("reading an error")
                        if msg[1] == self._gen:
                            self._pending.append(("error", msg, text, "preparing epoch "
                                                  f"{msg[2]} batch {msg[3]}"))
                            return None
                        continue
                    if msg[1] == self._gen:
                        self._pending.append(msg)
                        break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return None                  # `take` reports it
        if not self._pending or self._pending[0][0] != BATCH:
            return None
        _, _, slot, e, b, n, _ = self._pending[0]
        return (e, b), n, self.views[slot]

    def _send(self, kind: int, a: int = 0, b: int = 0, c: int = 0, doing: str = "") -> None:
        self._send_raw(_TO_CHILD.pack(kind, a, b, c), doing)

    def _send_raw(self, data: bytes, doing: str) -> None:
        if not self._finalizer.alive:
            raise PipelineError("the feed worker process was closed")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._sock.send(data)       # one message (SOCK_SEQPACKET: all or nothing)
                return
            except (BlockingIOError, InterruptedError):
                self._wait(doing, deadline, select.POLLOUT)
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    raise PipelineError(
                        f"a message of {len(data)} bytes to the feed worker process is larger "
                        f"than its socket takes, while {doing}; lookahead='thread' avoids the "
                        f"worker") from e
                self._died(doing)

    def close(self) -> None:
        """Stop the child and wait for it (idempotent)."""
        self._finalizer()


def worker_modules() -> list[str]:
    """The heavy modules imported in this process (the child must have none)."""
    heavy = ("torch", "nvidia", "cupy", "pandas", "cv2", "PIL")
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy and "." not in m)


# -- the child --------------------------------------------------------------------------------
def worker_main(sock: socket.socket, table_fd: int, slots_fd: int, t0: float | None = None
                ) -> None:
    """The child's loop (see the module docstring); returns when the parent says stop or
    closes the socket. ``t0``: ``perf_counter`` before the worker's imports."""
    t0 = time.perf_counter() if t0 is None else t0

    def send(kind, a=0, b=0, c=0, d=0, e=0, f=0.0):
        sock.sendall(_TO_PARENT.pack(kind, a, b, c, d, e, f))

    try:
        spec, fields, packing, tlayout, layout, slots = pickle.loads(sock.recv(_MAX_MSG))
        names = [e[0] for e in layout.entries if e[0] != IDS]
        tbuf = mmap.mmap(table_fd, tlayout.nbytes, prot=mmap.PROT_READ)
        sbuf = mmap.mmap(slots_fd, slots * layout.nbytes)
        os.close(table_fd)
        os.close(slots_fd)
        tables = SampleTables(**tlayout.views(tbuf))
        views = [layout.views(sbuf, s * layout.nbytes) for s in range(slots)]
        plan = Plan(tables.num_samples, spec)
        num_batches = len(plan)
    except Exception:  # noqa: BLE001 - reported to the parent
        send(ERROR, -1)
        sock.sendall(traceback.format_exc().encode()[-_MAX_TRACEBACK:])
        return
    send(READY, os.getpid(), f=time.perf_counter() - t0)
    sock.sendall(pickle.dumps(worker_modules()))
    msg = bytearray(_TO_CHILD.size)
    gen, pos, free = 0, None, deque()
    sock.setblocking(True)
    while True:
        try:
            got = sock.recv_into(msg) if pos is None or not free else \
                sock.recv_into(msg, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            got = -1
        except OSError:
            return                        # the parent is gone
        if got == 0 or (0 < got < len(msg)):
            return                        # the parent closed the socket (or is gone)
        if got > 0:
            kind, a, b, c = _TO_CHILD.unpack(msg)
            if kind == STOP:
                return
            if kind == START:
                gen, pos, free = a, (b, c), deque(range(slots))
            elif kind == FREE and a == gen:
                free.append(b)
            continue
        epoch, index = pos
        slot = free.popleft()
        c0 = time.thread_time()
        try:
            ids = plan(epoch)[index]
            out = batch_fields(tables, spec, fields, epoch, index, ids, packing=packing)
            n, view = len(ids), views[slot]
            view[IDS][:n] = ids
            for name in names:
                a, dst = out[name], view[name]
                if a.shape[1:] != dst.shape[1:] or len(a) != n:
                    raise ValueError(f"field {name!r} of epoch {epoch} batch {index} has shape "
                                     f"{a.shape}, its slot {dst.shape}")
                dst[:n] = a
            reply = (BATCH, gen, slot, epoch, index, n, time.thread_time() - c0)
            text = None
            pos = (epoch, index + 1) if index + 1 < num_batches else (epoch + 1, 0)
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            free.appendleft(slot)
            reply = (ERROR, gen, epoch, index, 0, 0, 0.0)
            text = traceback.format_exc().encode()[-_MAX_TRACEBACK:]
            pos = None                    # nothing more until the next START
        try:
            send(*reply)
            if text is not None:
                sock.sendall(text)
        except OSError:
            return
