"""
hsmock - a local mock of the HubSpot CRM REST API for erpcrm's tests.

It answers the endpoints erpcrm uses the way HubSpot documents them
(developers.hubspot.com): CRM v3 objects (batch upsert/create/update/
archive/read, single-object calls, listing, search), v4 associations,
properties, property groups, deal pipelines, owners, account info, token
info.  It enforces HubSpot's rate limits and sends its rate-limit headers,
and it can inject faults (outage, slowness, 5xx, malformed/truncated/reset
answers, auth failures, missing scopes, forced statuses, per-input
rejections).  Tests drive and inspect it through a control API under
/_mock/ (no auth, not rate limited, not logged as API calls).

Start it with tests/mock/hubspot_mock.py (its command line is there).
Standard library only.  One global lock (state.LOCK) serialises all state
changes.

Where things live:

    model.py          what a portal holds before anyone writes to it:
                      standard object types, properties, pipelines,
                      association types, owners; shared helpers
    errors.py         HubSpot's error answers (whole call, one input)
    state.py          the portal's state, its configuration and faults,
                      property validation, object and association writes
    routes/           the API, one module per family, joined in
                      routes/__init__.py (class Api, which routes paths)
        batch.py          batch inputs and answers shared by the families
        objects.py        /crm/v3/objects: batch and single-object calls,
                          listing
        search.py         /crm/v3/objects/{type}/search
        associations.py   /crm/v4/associations, /crm/v4/objects/.../
                          associations, association labels
        schema.py         /crm/v3/properties, property groups,
                          /crm/v3/pipelines, pipeline limits
        account.py        token info and scopes, /crm/v3/owners,
                          /account-info
    handler.py        the HTTP handler: faults, authentication, rate
                      limits, the request log
    control.py        the control API under /_mock/ (documented there)
    byhand.py         edits by hand for the control API: create, edit,
                      delete, merge, association removal
    server.py         the server and the command line

A new endpoint goes into the module of its family: a method answering
(status, body) or raising errors.ApiError, reached from that family's
route_* method.  A new control call goes into control.py, and is
documented in its header.
"""
