"""
search.py - /crm/v3/objects/{type}/search: filters, sorts, paging, the
10,000-result cap and the indexing delay.  Its rate limit is counted in
handler.py.
"""

import functools
import time
from decimal import Decimal, InvalidOperation

from ..errors import ApiError, bad_json, check_keys
from ..model import SEARCH_LIMIT_MAX, iso_ms


class SearchRoutes:

    OPS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
           "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
           "NOT_CONTAINS_TOKEN"}

    def search(self, t, body):
        st = self.st
        check_keys(body, {"filterGroups", "properties", "limit", "after",
                          "sorts", "query"}, "PublicObjectSearchRequest")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or limit < 0 or \
                limit > SEARCH_LIMIT_MAX:
            raise ApiError(400, "VALIDATION_ERROR",
                           "limit must be between 0 and %d"
                           % SEARCH_LIMIT_MAX, context={"limit": [str(limit)]})
        try:
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "VALIDATION_ERROR", "after must be numeric")
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > 5:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Too many filter groups (max 5)")
        total_filters = 0
        for g in groups:
            check_keys(g, {"filters"}, "FilterGroup")
            fl = g.get("filters") or []
            if len(fl) > 6:
                raise ApiError(400, "VALIDATION_ERROR",
                               "Too many filters in a group (max 6)")
            total_filters += len(fl)
            for f in fl:
                check_keys(f, {"propertyName", "operator", "value", "values",
                               "highValue"}, "Filter")
                if f.get("operator") not in self.OPS:
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "Unknown operator %r" % f.get("operator"))
                if f.get("propertyName") not in st.props[t] and \
                        f.get("propertyName") != "lastmodifieddate":
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "Property %r does not exist"
                                   % f.get("propertyName"))
                if f["operator"] in ("IN", "NOT_IN") and \
                        not isinstance(f.get("values"), list):
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "IN needs values[]")
        if total_filters > 18:
            raise ApiError(400, "VALIDATION_ERROR", "Too many filters (max 18)")
        props = body.get("properties") or None
        if after >= st.cfg.search_max_total:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Search results are limited to %d; cannot page "
                           "to result %d" % (st.cfg.search_max_total, after),
                           context={"after": [str(after)]})
        limit = min(limit, st.cfg.search_max_total - after)
        now = time.time()
        matches = []
        for o in st.objects[t].values():
            o = st.indexed(o, now)      # as the index saw it, or not yet
            if o is None or o["archived"]:
                continue
            if not groups or any(all(self._match(t, o, f)
                                     for f in g.get("filters") or [])
                                 for g in groups):
                matches.append(o)
        sorts = body.get("sorts") or []
        # HubSpot takes one sort rule: a property name ("-name" descending)
        # or {"propertyName", "direction"}
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise ApiError(400, "VALIDATION_ERROR",
                           "Only one sort is supported; got %d"
                           % (len(sorts) if isinstance(sorts, list) else 0),
                           context={"sorts": [str(len(sorts))]
                                    if isinstance(sorts, list) else []})
        for s in sorts:
            if isinstance(s, dict):
                check_keys(s, {"propertyName", "direction"}, "Sort")
                if s.get("direction", "ASCENDING") not in ("ASCENDING",
                                                           "DESCENDING"):
                    raise ApiError(400, "VALIDATION_ERROR",
                                   "direction must be ASCENDING or "
                                   "DESCENDING")
            elif not isinstance(s, str):
                raise bad_json("Cannot deserialize sort from %s"
                               % type(s).__name__)
        for s in reversed(sorts):
            if isinstance(s, str):
                name, desc = s.lstrip("-"), s.startswith("-")
            else:
                name = s.get("propertyName")
                desc = s.get("direction", "ASCENDING") == "DESCENDING"
            matches.sort(key=lambda o: self._key(t, name,
                                                 self._value(t, o, name)),
                         reverse=desc)
        page = matches[after:after + limit]
        out = {"total": len(matches),
               "results": [st.out(t, o, props) for o in page]}
        if after + limit < len(matches):
            out["paging"] = {"next": {"after": str(after + limit)}}
        return 200, out

    def _value(self, t, o, name):
        """A property's value as search sees it.  Contacts keep their last
        change in lastmodifieddate: searching them by hs_lastmodifieddate
        finds nothing (as integrators report of HubSpot), unless
        contacts_hs_lastmodifieddate is set."""
        if t == "contacts" and name == "hs_lastmodifieddate" and \
                not self.st.cfg.contacts_hs_lastmodifieddate:
            return None
        return self.st.getprop(o, name)

    def _key(self, t, name, v):
        if v is None:
            return (0, Decimal(0), "")
        d = self.st.props[t].get(name)
        return _typed_key(name == "hs_object_id" or (d and d["type"] == "number"),
                          d["type"] if d else "string", str(v))

    def _match(self, t, o, f):
        name, op = f["propertyName"], f["operator"]
        cur = self._value(t, o, name)
        if op == "HAS_PROPERTY":
            return cur not in (None, "")
        if op == "NOT_HAS_PROPERTY":
            return cur in (None, "")
        if op in ("IN", "NOT_IN"):
            keys = {self._key(t, name, str(x)) for x in f["values"]}
            inside = cur is not None and self._key(t, name, cur) in keys
            return inside if op == "IN" else not inside
        val = f.get("value")
        if op == "CONTAINS_TOKEN" or op == "NOT_CONTAINS_TOKEN":
            tok = str(val or "").lower().replace("*", "")
            has = cur is not None and tok in str(cur).lower()
            return has if op == "CONTAINS_TOKEN" else not has
        if cur in (None, ""):
            return op == "NEQ"
        a = self._key(t, name, cur)
        b = self._key(t, name, str(val))
        if op == "EQ":
            return a == b
        if op == "NEQ":
            return a != b
        if op == "LT":
            return a < b
        if op == "LTE":
            return a <= b
        if op == "GT":
            return a > b
        if op == "GTE":
            return a >= b
        if op == "BETWEEN":
            return b <= a <= self._key(t, name, str(f.get("highValue")))
        return False


@functools.lru_cache(maxsize=1 << 17)
def _typed_key(numeric, typ, v):
    """How search orders and compares a value of this type (cached: a
    search compares every object with its filters, and sorts them)."""
    if numeric:
        try:
            return (1, Decimal(v), "")
        except InvalidOperation:
            pass
    if typ in ("date", "datetime"):
        # dates compare as instants, whether given as ISO or epoch ms
        ms = iso_ms(v)
        if ms is not None:
            return (1, Decimal(ms), "")
    return (1, Decimal(0), v.lower())
