#!/usr/bin/python3
"""
layers.py [ROOT] - check the layering of erpcrm's C code (make test, suite
clang).

The code has three layers, each in its folder: the extension (extension/:
settings, shared memory, capture, SQL functions), the worker (worker/: the
loop and the steps of a delivery) and the HubSpot client (hubspot/: HTTP,
JSON, rate limiter).  Two rules, read from the `#include "..."` lines alone
(as `grep '#include "' hubspot/*` would show them):

  1. the HubSpot client includes no header of extension/ or worker/;
  2. no circle: a file's "module" is its name without .c/.h and without the
     _int of a private header (worker/delivery.c, delivery.h and
     delivery_int.h are one module); when a module includes another's
     header, the other may not come back to it, directly or through others.

Exits 1, naming each offending include or circle, when a rule is broken.
`layers.py --self-test` also shows that each rule can fail: it copies the
tree, adds such an include, and expects this script to refuse it.
"""

import os
import re
import shutil
import sys
import tempfile

LAYERS = ("extension", "worker", "hubspot")
CLIENT = "hubspot"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def sources(root):
    """Every .c and .h file of the three layers: {relative path: text}."""
    out = {}
    for layer in LAYERS:
        d = os.path.join(root, layer)
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    out[layer + "/" + name] = f.read()
    return out


def headers(files):
    """Header name -> its path (the build searches all three folders)."""
    return {os.path.basename(p): p for p in files if p.endswith(".h")}


def module(path):
    name = os.path.splitext(path)[0]
    return name[:-len("_int")] if name.endswith("_int") else name


def check(root):
    files = sources(root)
    hdrs = headers(files)
    problems = []
    edges = {}                  # module -> {module: "file includes header"}

    for path, text in files.items():
        for inc in INCLUDE.findall(text):
            target = hdrs.get(os.path.basename(inc))
            if target is None:
                continue        # PostgreSQL's or a library's header
            if path.startswith(CLIENT + "/") and not target.startswith(CLIENT + "/"):
                problems.append("the HubSpot client includes %s: %s includes \"%s\""
                                % (os.path.dirname(target) + "/", path, inc))
            a, b = module(path), module(target)
            if a != b:
                edges.setdefault(a, {}).setdefault(b, "%s includes \"%s\"" % (path, inc))

    # circles: depth-first search, each found once from its smallest module
    seen = set()

    def walk(start, node, trail):
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                ring = trail + [nxt]
                key = frozenset(ring)
                if key not in seen:
                    seen.add(key)
                    why = [edges[ring[i]][ring[i + 1]] for i in range(len(ring) - 1)]
                    problems.append("circle of includes %s: %s"
                                    % (" -> ".join(ring), "; ".join(why)))
            elif nxt > start and nxt not in trail:
                walk(start, nxt, trail + [nxt])

    for m in sorted(edges):
        walk(m, m, [m])
    return problems


def self_test(root):
    """Each rule refuses a tree that breaks it; the real tree passes."""
    ok = True
    cases = [
        ("hubspot/json.c", '#include "erpcrm.h"\n', "the HubSpot client includes extension/"),
        ("hubspot/ratelimit.c", '#include "delivery.h"\n', "the HubSpot client includes worker/"),
        # client.c includes erpcrm.h: this is the way back
        ("extension/erpcrm.h", '#include "client.h"\n', "circle of includes"),
        # a private header counts as its module's: delivery.c includes erpcrm.h
        ("extension/erpcrm.h", '#include "delivery_int.h"\n', "circle of includes"),
    ]
    for path, line, expect in cases:
        with tempfile.TemporaryDirectory() as tmp:
            for layer in LAYERS:
                shutil.copytree(os.path.join(root, layer), os.path.join(tmp, layer))
            with open(os.path.join(tmp, path), "a") as f:
                f.write(line)
            found = check(tmp)
            if not any(p.startswith(expect) for p in found):
                print("self-test: adding %r to %s was not refused (%s)"
                      % (line.strip(), path, found or "no complaint"))
                ok = False
    return ok


def main():
    args = sys.argv[1:]
    selftest = "--self-test" in args
    args = [a for a in args if a != "--self-test"]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    problems = check(root)
    for p in problems:
        print("layers: " + p)
    if selftest and not self_test(root):
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
