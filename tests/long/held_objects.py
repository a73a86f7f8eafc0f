#!/usr/bin/python3
"""
held_objects.py PORT TYPE FILE - write what the HubSpot mock holds of one
object type as tab-separated lines (hubspot id, erp_id, name, archived) for
COPY, so that the long runs compare 100,000s of objects in SQL rather than
in Perl.
"""

import json
import sys
import urllib.request


def clean(v):
    return "\\N" if v is None else (str(v).replace("\\", "\\\\")
                                    .replace("\t", "\\t").replace("\n", "\\n")
                                    .replace("\r", "\\r"))


def main():
    port, otype, path = sys.argv[1], sys.argv[2], sys.argv[3]
    with urllib.request.urlopen("http://127.0.0.1:%s/_mock/objects/%s"
                                % (port, otype), timeout=600) as r:
        objs = json.load(r)["results"]
    with open(path, "w") as f:
        for o in objs:
            p = o.get("properties") or {}
            f.write("\t".join([clean(o["id"]), clean(p.get("erp_id")),
                               clean(p.get("name")),
                               "t" if o.get("archived") else "f"]) + "\n")
    print(len(objs))


if __name__ == "__main__":
    main()
