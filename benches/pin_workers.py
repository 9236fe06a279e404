#!/usr/bin/env python3
"""Runs a benchmark command and pins each tokio worker thread of it, and of the processes it
starts, to a CPU of its own (the first worker of a process to CPU 0, the next to CPU 1, ...).

Why: in a benchmark that keeps every node in one process, a write to a loopback socket wakes
the reader's worker with a *synchronous* wake-up, and the kernel may place that worker on
the writer's CPU. On a two-CPU machine whose scheduler skips the search for an idle CPU once
the cache domain looks busy, both workers then take turns on one CPU while the other idles,
so a 100-peer broadcast runs one step at a time. Pinning keeps each worker on its own CPU.
It applies the same way to any implementation (it looks only at thread names), so
`compare.sh` runs both sides under it when `PIN_WORKERS=1`.

Usage: pin_workers.py COMMAND [ARGS...]; exits with the command's status. Linux only.
"""

import os
import subprocess
import sys
import time

# Tokio names its workers "tokio-runtime-worker" (older releases, cut to 15 characters by the
# kernel) or "tokio-rt-worker".
WORKER_PREFIXES = ("tokio-runtime-w", "tokio-rt-worker")
POLL_S = 0.02


def children(pid):
    """Direct children of `pid`, from each of its threads' children lists."""
    found = set()
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    found.update(int(c) for c in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return found


def descendants(root):
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children(pid))
    return seen


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cpus = sorted(os.sched_getaffinity(0))
    proc = subprocess.Popen(sys.argv[1:])
    seen = set()  # (pid, tid) of every thread already looked at, pinned or not
    next_cpu = {}  # pid -> index of the CPU its next worker gets
    while proc.poll() is None:
        for pid in descendants(proc.pid):
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in sorted(tids, key=int):
                if (pid, tid) in seen:
                    continue
                seen.add((pid, tid))
                try:
                    with open(f"/proc/{pid}/task/{tid}/comm") as f:
                        name = f.read().strip()
                except OSError:
                    continue
                if not name.startswith(WORKER_PREFIXES):
                    continue
                i = next_cpu.get(pid, 0)
                next_cpu[pid] = i + 1
                try:
                    os.sched_setaffinity(int(tid), {cpus[i % len(cpus)]})
                except OSError:
                    pass  # the thread ended meanwhile
        time.sleep(POLL_S)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
