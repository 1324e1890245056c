"""CPU time and memory of a process tree, read from /proc.

Kamailio forks a handful of processes, so every figure is summed over the
root process and all its live descendants.  CPU is utime+stime (clock ticks,
usually 10 ms) plus the cutime+cstime already reaped into the root.  Memory
is PSS from smaps_rollup when readable (shared memory is then counted once,
not once per process), else VmRSS.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """The root pid and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of the whole tree, in seconds."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # Fields after the name start at index 0 = state; utime is field 14
        # of the full line, i.e. index 11 here.
        ticks += int(fields[11]) + int(fields[12])
        if pid == root:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def tree_cpu_ns(root: int) -> int | None:
    """On-CPU time of every thread in the tree from schedstat, in ns (None if unavailable).

    Finer than utime+stime (which count whole clock ticks), so short runs of a
    fast server are still measured well.
    """
    total = 0
    for pid in tree_pids(root):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                if pid == root and tid == str(root):
                    return None
            except (OSError, ValueError, IndexError):
                continue
    return total


def _memory_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kib(root: int) -> int:
    """PSS (or RSS where PSS is not readable) of the whole tree, in KiB."""
    return sum(_memory_kib(pid) for pid in tree_pids(root))
