#!/usr/bin/python3
"""
valgrind_report.py DIR ERPCRM_SO - summarise the valgrind logs (one per
process, DIR/<pid>.log) of a memcheck run (tests/long/memcheck.sh).

Each stack of an error (where it happened; where the memory was allocated
or the uninitialised value created) is attributed to the first frame, from
the innermost, that is either erpcrm's (a function erpcrm.so defines, read
with nm, or a source file of worker/, hubspot/ or extension/) or the server's
(postgres itself); frames of libc, libcurl, cJSON, OpenSSL and valgrind
are passed over, so a library misused by erpcrm counts as erpcrm's.  An
error is erpcrm's when any of its stacks is.  Those errors are printed with
their stacks, once per distinct stack; the others are counted apart (the
server core: Debian's PostgreSQL is not built for valgrind and shows known
false positives, such as uninitialised padding written to WAL, also when
erpcrm's code is further up the stack).

Exit status 1 when any error involves erpcrm, else 0.
"""

import collections
import glob
import os
import re
import subprocess
import sys

LINE = re.compile(r"^==(\d+)== ?(.*)$")
FRAME = re.compile(r"^\s+(?:at|by) 0x[0-9A-Fa-f]+: (.+?) \((.*)\)$")


def erpcrm_functions(so):
    out = subprocess.run(["nm", "--defined-only", so], capture_output=True,
                         text=True, check=True).stdout
    return {parts[2] for parts in (l.split() for l in out.splitlines())
            if len(parts) == 3 and parts[1] in "tT"}


def errors_of(path):
    """The error blocks of one log: lists of lines without the ==pid== tag."""
    blocks = []
    cur = []
    with open(path, errors="replace") as f:
        for raw in f:
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            text = m.group(2)
            if text.strip() == "":
                if cur:
                    blocks.append(cur)
                cur = []
            else:
                cur.append(text)
    if cur:
        blocks.append(cur)
    # headers (the valgrind banner) and summaries are no errors
    return [b for b in blocks
            if any(FRAME.match(l) for l in b)
            and not b[0].startswith(("Memcheck,", "Command:", "HEAP SUMMARY",
                                     "LEAK SUMMARY", "ERROR SUMMARY"))]


def stacks(block):
    """The frame lists of an error: each non-frame line starts a new one."""
    out = []
    for l in block:
        m = FRAME.match(l)
        if m:
            if not out:
                out.append([])
            out[-1].append((m.group(1), m.group(2)))
        else:
            out.append([])
    return [st for st in out if st]


# PostgreSQL's allocators: an allocation stack belongs to their caller
ALLOCATORS = {"palloc", "palloc0", "palloc_extended", "repalloc", "pstrdup",
              "pnstrdup", "psprintf", "MemoryContextAlloc",
              "MemoryContextAllocZero", "MemoryContextAllocExtended",
              "MemoryContextStrdup", "AllocSetAlloc", "AllocSetRealloc",
              "GenerationAlloc", "SlabAlloc", "???"}


def owner(stack, ours_fn, allocation=False):
    for fn, where in stack:
        in_core = "postgres.real" in where or where.endswith("/postgres)")
        if allocation and in_core and fn in ALLOCATORS:
            continue
        if in_core:
            return "core"
        if (fn in ours_fn or "erpcrm.so" in where
                or re.search(r"(^|/)(worker|hubspot|extension)/[a-z_]+\.c:\d+$", where)):
            return "erpcrm"
    return None


def main():
    d, so = sys.argv[1], sys.argv[2]
    ours_fn = erpcrm_functions(so)
    ours = collections.OrderedDict()
    core = collections.Counter()
    nlogs = 0
    for path in sorted(glob.glob(os.path.join(d, "*.log"))):
        nlogs += 1
        for b in errors_of(path):
            frames = [FRAME.match(l) for l in b]
            mine = any(owner(st, ours_fn, allocation=i > 0) == "erpcrm"
                       for i, st in enumerate(stacks(b)))
            names = tuple(f.group(1) for f in frames if f)[:8]
            if mine:
                key = (b[0], names)
                if key in ours:
                    ours[key][0] += 1
                else:
                    ours[key] = [1, os.path.basename(path), b]
            else:
                core[(b[0], names[0] if names else "?")] += 1

    total = sum(v[0] for v in ours.values())
    print("valgrind: %d process logs, %d error(s) involving erpcrm "
          "(%d distinct), %d error(s) in the server core alone"
          % (nlogs, total, len(ours), sum(core.values())))
    for (what, top), n in core.most_common(8):
        print("  core: %dx %s  [%s]" % (n, what, top))
    for (what, _), (n, fname, block) in ours.items():
        print("\n== %dx, first in %s:" % (n, fname))
        for l in block:
            print("   " + l)
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
