"""
byhand.py - what people do in HubSpot's own screens, for the control API.

A salesperson creates, edits, deletes and merges records and removes
associations by hand.  These calls make the same changes the way HubSpot
records them: hs_lastmodifieddate moves, each changed value gets a version
in the property's history with sourceType CRM_UI and the user's id, and a
merge leaves the ids it removed pointing to the record it made.
"""

from .errors import ApiError, InputError
from .model import now_iso


def user_source(st, body):
    """(sourceType, sourceId, updatedByUserId) of a user in the CRM UI:
    body's userId, or the first owner's."""
    uid = body.get("userId")
    if uid is None:
        uid = st.owners[0]["userId"] if st.owners else 9000001
    uid = int(uid)
    return ("CRM_UI", "userId:%d" % uid, uid)


def _when(st, item):
    """When the change was made: the item's "timestamp" (epoch
    milliseconds or ISO 8601, to spread many edits over time), or now."""
    if item.get("timestamp") is None:
        return now_iso()
    ts = st._norm_datetime(str(item["timestamp"]))
    if ts is None:
        raise ApiError(400, "VALIDATION_ERROR",
                       "timestamp %r is neither epoch milliseconds nor ISO "
                       "8601" % item["timestamp"])
    return ts


def _inputs(body):
    """A body is one object, or {"inputs": [objects]} for many."""
    if "inputs" in body:
        if not isinstance(body["inputs"], list):
            raise ApiError(400, "VALIDATION_ERROR", "inputs must be a list")
        return body["inputs"], True
    return [body], False


def _object(st, t, oid):
    o = st.objects[t].get(str(oid))
    if o is None or o["archived"]:
        raise ApiError(404, "OBJECT_NOT_FOUND",
                       "no %s with id %s (archived, merged or never made)"
                       % (t, oid))
    return o


def _links(st, t, assocs):
    """[(toType, toId, category, typeId)] from [{toType, toId, typeId?,
    category?}], every target checked; the default type when none given."""
    out = []
    for a in assocs or []:
        tt = st.resolve_type(a["toType"])
        _object(st, tt, a["toId"])
        if "typeId" in a:
            cat = a.get("category", "HUBSPOT_DEFINED")
            tid = int(a["typeId"])
            if (cat, tid) not in st.defs.get((t, tt), {}):
                raise ApiError(400, "VALIDATION_ERROR",
                               "no association type %s %d from %s to %s"
                               % (cat, tid, t, tt))
        else:
            d = st.default_def(t, tt)
            if d is None:
                raise ApiError(400, "VALIDATION_ERROR",
                               "%s cannot be associated with %s" % (t, tt))
            cat, tid = d
        out.append((tt, str(a["toId"]), cat, tid))
    return out


def create(st, t, body):
    """POST /_mock/objects/{type}: made by hand, without validation."""
    items, many = _inputs(body)
    source = user_source(st, body)
    plans = [(st.check_props_shape(i.get("properties")),
              _links(st, t, i.get("associations")), _when(st, i))
             for i in items]
    results = []
    for props, links, ts in plans:
        obj = st.create(t, props, ts, source)
        for tt, tid, cat, typ in links:
            st.link(t, obj["id"], tt, tid, cat, typ)
        results.append(st.out(t, obj, echo=[]))
    return 201, {"results": results} if many else results[0]


def edit(st, t, oid, body):
    """PATCH /_mock/objects/{type}/{id}, or /_mock/objects/{type} with
    {"inputs": [{"id", "properties"}]}: edited by hand.  Values are checked
    as HubSpot's screens check them (options, formats, unique values)."""
    if oid is None:
        items, many = _inputs(body)
    else:
        items, many = [dict(body, id=oid)], False
    source = user_source(st, body)
    plans = []
    for i in items:
        o = _object(st, t, i.get("id"))
        props = st.check_props_shape(i.get("properties"))
        try:
            plans.append((o, st.validate(t, props, o, {"ids": [o["id"]]}),
                          _when(st, i)))
        except InputError as e:
            raise ApiError(e.status, e.category, e.message, errors=e.errors,
                           context=e.context)
    results = []
    for o, norm, ts in plans:
        st.apply(t, o, norm, ts, source)
        results.append(st.out(t, o, echo=[]))
    return 200, {"results": results} if many else results[0]


def delete(st, t, oid, permanent):
    """DELETE /_mock/objects/{type}/{id}: archived, as deleting in HubSpot
    does (restorable); ?permanent=true: gone for good."""
    o = st.objects[t].get(oid)
    if o is None:
        return 404, {"status": "error", "message": "no such object"}
    if permanent:
        st.purge(t, o)
    else:
        st.archive(t, o, now_iso())
    return 200, {"status": "ok"}


def merge(st, t, body):
    """POST /_mock/merge/{type} {"primaryObjectId", "objectIdToMerge"}
    (the body of HubSpot's merge call): merged by hand."""
    keep = _object(st, t, body["primaryObjectId"])
    gone = _object(st, t, body["objectIdToMerge"])
    if keep is gone:
        raise ApiError(400, "VALIDATION_ERROR",
                       "cannot merge a record with itself")
    obj = st.merge(t, keep, gone, now_iso(), user_source(st, body))
    return 200, st.out(t, obj, echo=[])


def unlink(st, ft, fid, tt, tid):
    """DELETE /_mock/associations/{fromType}/{fromId}/{toType}/{toId}:
    every association between the two removed by hand, both ways."""
    m = st.assoc.get((ft, fid, tt))
    back = st.assoc.get((tt, tid, ft))
    if not (m and tid in m) and not (back and fid in back):
        return 404, {"status": "error", "message": "no such association"}
    st.unlink(ft, fid, tt, tid)
    return 200, {"status": "ok"}
