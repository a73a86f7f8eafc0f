#!/usr/bin/python3
"""
tests/demo/hubspot.py: the demo's view of the HubSpot mock (standard library
only).

    hubspot.py URL ctl METHOD PATH [JSON]     a call to the mock's control API
    hubspot.py URL report EXPECTED HANDMADE   what HubSpot holds, for people
    hubspot.py URL deal EXPECTED ERP_ID        a deal's amount and stage
    hubspot.py URL check EXPECTED HANDMADE    does it hold what the ERP says?

EXPECTED is the JSON of tests/demo/expected.sql (the mappings, the rows of
their views, the stages setup_hubspot() made); HANDMADE is a JSON object with
the HubSpot ids of what sales made by hand: {"company": id, "contact": id,
"deals": [ids]}.  Stage labels come from erpcrm.pipeline_stage and from the
mock's own default pipeline (hsmock/model.py, copied next to this file).
"""

import collections
import json
import os
import re
import sys
import textwrap
import urllib.error
import urllib.request
from decimal import Decimal, InvalidOperation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hsmock.model import DEFAULT_STAGES, HUBSPOT_ASSOC_DEFS  # noqa: E402

TYPES = ("companies", "contacts", "products", "deals", "line_items")
LABEL = {"companies": "companies", "contacts": "contacts", "products": "products",
         "deals": "deals", "line_items": "line items"}
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=30) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        sys.exit("mock %s %s: %s %s" % (method, path, e, e.read().decode()))
    except (urllib.error.URLError, OSError) as e:
        sys.exit("mock %s %s: %s" % (method, path, e))


def get(base, path):
    return json.loads(call(base, "GET", path))


def n(x):
    return "{:,}".format(x)


class Portal:
    """Everything the mock holds, indexed."""

    def __init__(self, base):
        self.objects = {t: get(base, "/_mock/objects/" + t)["results"] for t in TYPES}
        self.assocs = get(base, "/_mock/associations")["results"]
        self.stats = get(base, "/_mock/stats")
        self.by_id = {}
        self.by_erp = collections.defaultdict(list)
        for t, objs in self.objects.items():
            for o in objs:
                self.by_id[(t, o["id"])] = o
                if not o["archived"] and o["properties"].get("erp_id"):
                    self.by_erp[(t, o["properties"]["erp_id"])].append(o)
        self.linked = set((a["fromType"], a["fromId"], a["toType"], a["toId"], a["typeId"])
                          for a in self.assocs)
        self.linked_any = set(x[:4] for x in self.linked)

    def active(self, t):
        return [o for o in self.objects[t] if not o["archived"]]


def stage_labels(expected):
    """(pipeline id, stage id) -> (pipeline label, stage label, order)."""
    labels = {}
    for i, (sid, label, _p, _c) in enumerate(DEFAULT_STAGES):
        labels[("default", sid)] = ("Sales Pipeline", label, i)
    for s in expected["stages"]:
        labels[(s["pipeline_id"], s["stage_id"])] = (s["pipeline"], s["stage"], s["display_order"])
    return labels


def assoc_label(from_type, to_type, type_id):
    for ft, tt, tid, label, _inv in HUBSPOT_ASSOC_DEFS:
        if (ft, tt, tid) == (from_type, to_type, type_id):
            return label or "default"
    return "custom"


def located(portal, expected):
    """mapping -> {erp_id: (row, HubSpot object or None, why)}"""
    out = {}
    for m in expected["mappings"]:
        t = m["object_type"]
        idp = m["id_property"]
        found = {}
        for row in m["rows"]:
            key = str(row["erp_id"])
            if row.get("hubspot_id"):
                o = portal.by_id.get((t, str(row["hubspot_id"])))
                if o is None or o["archived"]:
                    found[key] = (row, None, "HubSpot has no active %s %s" % (t, row["hubspot_id"]))
                else:
                    found[key] = (row, o, None)
                continue
            objs = [o for o in portal.by_erp.get((t, key), [])] if idp == "erp_id" else \
                [o for o in portal.active(t) if o["properties"].get(idp) == str(row.get(idp))]
            if len(objs) == 1:
                found[key] = (row, objs[0], None)
            else:
                found[key] = (row, None, "%d objects in HubSpot" % len(objs))
        out[m["name"]] = found
    return out


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

def report(base, expected, hand):
    portal = Portal(base)
    labels = stage_labels(expected)
    where = located(portal, expected)

    print("    %-12s %7s %9s" % ("object", "active", "archived"))
    for t in TYPES:
        objs = portal.objects[t]
        act = sum(1 for o in objs if not o["archived"])
        print("    %-12s %7s %9s" % (LABEL[t], n(act), n(len(objs) - act)))

    # deals per pipeline and stage, in the pipelines' order
    print()
    print("    deals per pipeline and stage")
    per = collections.Counter()
    unknown = collections.Counter()
    for d in portal.active("deals"):
        p = d["properties"]
        key = (p.get("pipeline"), p.get("dealstage"))
        if key in labels:
            per[labels[key]] += 1
        else:
            unknown[key] += 1
    pipelines = collections.OrderedDict()
    for (pl, st, order), cnt in sorted(per.items(), key=lambda kv: (kv[0][0] != "Invoices (ERP)", kv[0][0], kv[0][2])):
        pipelines.setdefault(pl, []).append((st, cnt))
    for pl, stages in pipelines.items():
        total = sum(c for _s, c in stages)
        print(textwrap.fill(" · ".join("%s %s" % (s, n(c)) for s, c in stages), 100,
                            initial_indent="    %-15s %6s   " % (pl, n(total)), subsequent_indent=" " * 29,
                            break_on_hyphens=False))
    for (pl, st), cnt in unknown.items():
        print("    pipeline %s, stage %s (not known here): %d" % (pl, st, cnt))

    origin = collections.Counter()
    hand_deals = set(str(x) for x in hand.get("deals", []))
    for d in portal.active("deals"):
        e = d["properties"].get("erp_id") or ""
        if d["id"] in hand_deals:
            origin["made by hand in HubSpot (now with their ERP order)"] += 1
        elif e.startswith("FV-"):
            origin["invoices"] += 1
        elif e.startswith("OF-"):
            origin["offers"] += 1
        elif e.startswith("ZAM-"):
            origin["orders from B2B"] += 1
        else:
            origin["other"] += 1
    print("    deals from: " + ", ".join("%s %s" % (k, n(v)) for k, v in origin.most_common()))
    items = collections.Counter()
    for li in portal.active("line_items"):
        e = li["properties"].get("erp_id") or ""
        items["on invoice deals" if e.startswith("FV-") else "on offer deals" if e.startswith("OF-") else "other"] += 1
    print("    line items: " + ", ".join("%s %s" % (k, n(v)) for k, v in items.most_common()))
    with_product = sum(1 for li in portal.active("line_items") if li["properties"].get("hs_product_id"))
    print("    line items with their product (hs_product_id): %s" % n(with_product))

    # associations by type, in the directions erpcrm writes them (HubSpot
    # keeps the inverse too); deal-to-deal pairs once
    print()
    print("    associations by type")
    types_of = {m["name"]: m["object_type"] for m in expected["mappings"]}
    directions = set()
    for m in expected["mappings"]:
        for a in m["associations"]:
            if not a["as_property"]:
                directions.add((m["object_type"], types_of[a["target"]]))
    written = collections.Counter()
    for a in portal.assocs:
        ft, tt = a["fromType"], a["toType"]
        if (ft, tt) in directions and (ft != tt or int(a["fromId"]) < int(a["toId"])):
            written[(ft, tt, a["typeId"])] += 1
    for (ft, tt, tid), cnt in sorted(written.items(), key=lambda kv: (TYPES.index(kv[0][0]), TYPES.index(kv[0][1]), kv[0][2])):
        print("    %-10s -> %-10s type %-4s %-8s %7s" % (LABEL[ft], LABEL[tt], tid,
                                                       assoc_label(ft, tt, tid), n(cnt)))

    # what sales made by hand, and what became of it
    print()
    print("    made by hand in HubSpot before the ERP was connected:")
    c = portal.by_id.get(("companies", str(hand.get("company"))))
    if c:
        p = c["properties"]
        print("    company #%s %s: adopted by domain %s as erp_id %s, NIP %s, owner %s kept"
              % (c["id"], p.get("name"), p.get("domain"), p.get("erp_id"), p.get("nip"),
                 p.get("hubspot_owner_id")))
    k = portal.by_id.get(("contacts", str(hand.get("contact"))))
    if k:
        p = k["properties"]
        print("    contact #%s %s %s: adopted by e-mail %s as erp_id %s"
              % (k["id"], p.get("firstname"), p.get("lastname"), p.get("email"), p.get("erp_id")))
    if hand.get("deals"):
        print("    deals, updated with the ERP orders made from them (the stage stays sales'):")
        print("    %-6s %-38s %-25s %-11s %-17s %s" % ("deal", "name", "stage", "order", "status", "invoices"))
    for did in hand.get("deals", []):
        d = portal.by_id.get(("deals", str(did)))
        if not d:
            continue
        p = d["properties"]
        invoices = sum(1 for a in portal.assocs if a["toType"] == "deals" and a["toId"] == d["id"]
                       and a["fromType"] == "deals")
        print("    #%-5s %-38s %-25s %-11s %-17s %d"
              % (d["id"], p.get("dealname"),
                 labels.get((p.get("pipeline"), p.get("dealstage")), ("", p.get("dealstage"), 0))[1],
                 p.get("order_number") or "-", p.get("order_status") or "-", invoices))

    # one invoice as HubSpot shows it: Alfa-Bud's latest from the ERP
    inv = [(r, o) for r, o, _w in where.get("invoices", {}).values()
           if o is not None and str(r.get("company_erp_id")) == "1"]
    if inv:
        row, d = max(inv, key=lambda ro: int(str(ro[0]["erp_id"]).split("-")[1]))
        p = d["properties"]
        print()
        print("    an invoice deal as HubSpot shows it (#%s)" % d["id"])
        for prop in ("erp_id", "dealname", "invoice_number", "amount", "net_amount", "deal_currency_code",
                     "closedate", "hubspot_owner_id"):
            print("        %-19s %s" % (prop, p.get(prop) or "-"))
        print("        %-19s %s / %s" % ("pipeline / stage",
                                          *labels.get((p.get("pipeline"), p.get("dealstage")), ("?", "?", 0))[:2]))
        cos = [portal.by_id[("companies", a["toId"])]["properties"].get("name") for a in portal.assocs
               if a["fromType"] == "deals" and a["fromId"] == d["id"] and a["toType"] == "companies"
               and a["typeId"] == 5]
        print("        %-19s %s" % ("company (primary)", ", ".join(cos) or "-"))
        for a in portal.assocs:
            if a["fromType"] == "deals" and a["fromId"] == d["id"] and a["toType"] == "deals":
                o = portal.by_id[("deals", a["toId"])]["properties"]
                print("        %-19s #%s %s (%s %s)" % ("order deal", a["toId"], o.get("dealname"),
                                                      o.get("order_number"), o.get("order_status")))
        for a in portal.assocs:
            if a["fromType"] == "line_items" and a["toType"] == "deals" and a["toId"] == d["id"]:
                li = portal.by_id[("line_items", a["fromId"])]["properties"]
                prod = portal.by_id.get(("products", str(li.get("hs_product_id"))), {}).get("properties", {})
                print("        line %-14s %s x %s PLN  %s (product %s)"
                      % (li.get("erp_id"), li.get("quantity"), li.get("price"), li.get("name"),
                         prod.get("hs_sku", "?")))


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------

def same(want, have):
    if want is None:
        return have in (None, "")
    if isinstance(want, bool):
        return have == ("true" if want else "false")
    if isinstance(want, (int, Decimal)):
        try:
            return Decimal(str(want)) == Decimal(have)
        except (InvalidOperation, TypeError):
            return False
    want = str(want)
    if DATE_RE.match(want) and have and len(have) > 10 and have[10] == "T":
        return have[:10] == want and have[11:19] == "00:00:00"
    return want == have


def check(base, expected, hand):
    portal = Portal(base)
    where = located(portal, expected)
    problems = []
    by_type = collections.defaultdict(set)
    hand_deals = set(str(x) for x in hand.get("deals", []))
    for m in expected["mappings"]:
        t = m["object_type"]
        assoc_cols = {a["column"]: a for a in m["associations"]}
        owner_from = [a for a in m["associations"] if a["inherit_owner"]]
        for key, (row, obj, why) in where[m["name"]].items():
            by_type[t].add(key)
            if obj is None:
                problems.append("%s %s: %s" % (m["name"], key, why))
                continue
            if m["hubspot_ids"].get(key) != obj["id"]:
                problems.append("%s %s: erpcrm.sync_state says HubSpot id %s, HubSpot has it as #%s"
                                % (m["name"], key, m["hubspot_ids"].get(key), obj["id"]))
            p = obj["properties"]
            for col, want in row.items():
                if col in ("erp_id", "hubspot_id") or col in assoc_cols:
                    continue
                if col == "hubspot_owner_id" and want is None and owner_from:
                    tgt = where[owner_from[0]["target"]].get(str(row.get(owner_from[0]["column"])))
                    want = tgt[1]["properties"].get("hubspot_owner_id") if tgt and tgt[1] else None
                if not same(want, p.get(col)):
                    problems.append("%s %s: %s is %r in HubSpot, %r in the ERP"
                                    % (m["name"], key, col, p.get(col), want))
            for col, a in assoc_cols.items():
                ref = row.get(col)
                if ref is None:
                    continue
                tgt = where[a["target"]].get(str(ref))
                if not tgt or tgt[1] is None:
                    problems.append("%s %s: %s %s is not in HubSpot" % (m["name"], key, a["target"], ref))
                    continue
                to = tgt[1]
                to_type = next(x["object_type"] for x in expected["mappings"] if x["name"] == a["target"])
                if a["as_property"]:
                    if p.get(a["as_property"]) != to["id"]:
                        problems.append("%s %s: %s is %r, %s %s is #%s" % (
                            m["name"], key, a["as_property"], p.get(a["as_property"]), a["target"], ref, to["id"]))
                elif a["type_id"] is not None:
                    if (t, obj["id"], to_type, to["id"], a["type_id"]) not in portal.linked:
                        problems.append("%s %s: no association (type %s) to %s %s"
                                        % (m["name"], key, a["type_id"], a["target"], ref))
                elif (t, obj["id"], to_type, to["id"]) not in portal.linked_any:
                    problems.append("%s %s: no association to %s %s" % (m["name"], key, a["target"], ref))
        if m["on_delete"] == "keep":
            by_type[t].update(m["kept"])
    for t in TYPES:
        for o in portal.active(t):
            e = o["properties"].get("erp_id")
            if e and e not in by_type[t]:
                problems.append("%s #%s: erp_id %s is in HubSpot but not in the ERP's views" % (t, o["id"], e))
            elif not e and not (t == "deals" and o["id"] in hand_deals):
                problems.append("%s #%s: in HubSpot without an erp_id" % (t, o["id"]))
    for what, want in (("company", hand.get("company")), ("contact", hand.get("contact"))):
        o = portal.by_id.get((what == "company" and "companies" or "contacts", str(want)))
        if want and (o is None or o["archived"] or not o["properties"].get("erp_id")):
            problems.append("the %s made by hand (#%s) was not adopted" % (what, want))
    st = portal.stats
    if st["rateLimited"]:
        problems.append("HubSpot answered 429 %d times" % st["rateLimited"])
    if st["maxWindowCalls"] > 100:
        problems.append("%d calls in one 10-s window, HubSpot allows 100" % st["maxWindowCalls"])
    for f in expected["failures"]:
        problems.append("erpcrm.failures: %s %s: %s" % (f["mapping"], f["erp_id"], f["error_message"]))
    for p in problems[:25]:
        print("    " + p, file=sys.stderr)
    if len(problems) > 25:
        print("    ... and %d more" % (len(problems) - 25), file=sys.stderr)
    checked = sum(len(v) for v in where.values())
    if not problems:
        print("    %s objects of %d mappings checked: each once in HubSpot, with the ERP's values,"
              % (n(checked), len(expected["mappings"])))
        print("    associations and the HubSpot id erpcrm.sync_state recorded; nothing else active")
        print("    there; no 429; HubSpot's busiest 10-s window:")
        print("    %d calls (the worker's and those of check_connection() and setup_hubspot())"
              % st["maxWindowCalls"])
    return 1 if problems else 0


def main():
    base, cmd = sys.argv[1], sys.argv[2]
    if cmd == "ctl":
        body = sys.argv[5].encode() if len(sys.argv) > 5 else None
        sys.stdout.write(call(base, sys.argv[3], sys.argv[4], body))
        return 0
    with open(sys.argv[3]) as f:
        expected = json.load(f, parse_float=Decimal)
    if cmd == "deal":
        # hubspot.py URL deal EXPECTED ERP_ID: amount and stage of a deal
        # and its line items, which add up to its net amount
        labels = stage_labels(expected)
        portal = Portal(base)
        for d in portal.by_erp.get(("deals", sys.argv[4]), []):
            p = d["properties"]
            lines = [portal.by_id[("line_items", a["fromId"])]["properties"] for a in portal.assocs
                     if a["fromType"] == "line_items" and a["toType"] == "deals" and a["toId"] == d["id"]
                     and ("line_items", a["fromId"]) in portal.by_id
                     and not portal.by_id[("line_items", a["fromId"])]["archived"]]
            total = sum((Decimal(li.get("amount") or "0") for li in lines), Decimal(0))
            print("%s PLN (net %s), stage %s, %d line items (%s) adding up to %s"
                  % (p.get("amount"), p.get("net_amount"),
                     labels.get((p.get("pipeline"), p.get("dealstage")), ("", "?"))[1], len(lines),
                     ", ".join("%s x %s" % (li.get("quantity"), li.get("price"))
                               for li in sorted(lines, key=lambda x: x.get("erp_id") or "")),
                     total))
        return 0
    with open(sys.argv[4]) as f:
        hand = json.load(f)
    if cmd == "report":
        report(base, expected, hand)
        return 0
    if cmd == "check":
        return check(base, expected, hand)
    sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    sys.exit(main())
