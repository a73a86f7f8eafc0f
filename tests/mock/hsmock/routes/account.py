"""
account.py - the token and its scopes (/oauth/v2/private-apps/get/
access-token-info, and the scope each call needs), owners (/crm/v3/owners)
and the account (/account-info/v3/details, daily API usage).
"""

import datetime

from ..errors import ApiError, check_keys
from ..model import ALL_SCOPES_BASE, APP_ID, PORTAL_ID, \
    next_midnight_portal, now_iso


def type_scope(t, write, granular=False):
    rw = "write" if write else "read"
    if t in ("products", "line_items"):
        return "crm.objects.%s.%s" % (t, rw) if granular else "e-commerce"
    if t in ("contacts", "companies", "deals", "orders"):
        return "crm.objects.%s.%s" % (t, rw)
    return "crm.objects.custom.%s" % rw


def schema_scope(t, write, granular=False):
    rw = "write" if write else "read"
    if t in ("products", "line_items"):
        return "crm.objects.%s.%s" % (t, rw) if granular else "e-commerce"
    if t in ("contacts", "companies", "deals", "orders"):
        return "crm.schemas.%s.%s" % (t, rw)
    return "crm.schemas.custom.%s" % rw


class AccountRoutes:

    def route_owners(self, method, p, q, body):
        """/crm/v3/owners[/{id}]"""
        n = len(p)
        if method == "GET":
            owners = self.st.owners
            if n == 4:
                for o in owners:
                    if o["id"] == p[3]:
                        return 200, o
                raise ApiError(404, "OBJECT_NOT_FOUND",
                               "Owner %s not found" % p[3])
            # HubSpot lists active owners, or with archived=true only
            # the deactivated ones; limit (1-500, default 100) a page,
            # paging.next.after to the next page
            archived = q.get("archived", ["false"])[0].lower() == "true"
            owners = [o for o in owners
                      if bool(o.get("archived")) == archived]
            if "email" in q:
                em = q["email"][0].lower()
                owners = [o for o in owners if o["email"].lower() == em]
            try:
                limit = int(q.get("limit", ["100"])[0])
                start = int(q.get("after", ["0"])[0] or 0)
            except ValueError:
                raise ApiError(400, "VALIDATION_ERROR",
                               "limit and after must be integers")
            if limit < 1 or limit > 500 or start < 0:
                raise ApiError(400, "VALIDATION_ERROR",
                               "limit must be 1 to 500")
            out = {"results": owners[start:start + limit]}
            if start + limit < len(owners):
                nxt = str(start + limit)
                out["paging"] = {"next": {
                    "after": nxt,
                    "link": "https://api.hubapi.com/crm/v3/owners?after="
                            + nxt}}
            return 200, out
        return None

    def account_details(self):
        """GET /account-info/v3/details"""
        return 200, {"portalId": PORTAL_ID, "accountType": "STANDARD",
                     "timeZone": "Europe/Warsaw",
                     "companyCurrency": "PLN",
                     "additionalCurrencies": ["EUR", "USD"],
                     "utcOffset": "+01:00",
                     "utcOffsetMilliseconds": 3600000,
                     "uiDomain": "app-eu1.hubspot.com",
                     "dataHostingLocation": "eu1"}

    def api_usage(self):
        """GET /account-info/v3/api-usage/daily/private-apps"""
        return 200, {"results": [{
            "name": "private-apps-api-calls-daily",
            "usageLimit": self.st.cfg.daily_limit,
            "currentUsage": self.st.daily_used,
            "collectedAt": now_iso(), "fetchStatus": "SUCCESS",
            "resetsAt": next_midnight_portal().astimezone(
                datetime.timezone.utc).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")}]}

    def token_info(self, body, cid):
        check_keys(body, {"tokenKey"}, "AccessTokenInfoRequest")
        tok = body.get("tokenKey")
        if tok not in self.st.cfg.tokens:
            raise ApiError(401, "INVALID_AUTHENTICATION",
                           "The access token provided is invalid.")
        return 200, {"userId": 9000001, "hubId": PORTAL_ID,
                     "appId": APP_ID, "scopes": self.scopes()}

    def scopes(self):
        missing = self.st.faults.get("missing_scopes", set())
        out = list(ALL_SCOPES_BASE)
        for t in self.st.types:
            if t in missing:
                continue
            for w in (False, True):
                for s in (type_scope(t, w, self.st.cfg.granular_scopes),
                          schema_scope(t, w, self.st.cfg.granular_scopes)):
                    if s not in out:
                        out.append(s)
        if any(t in missing for t in ("products", "line_items")):
            out = [s for s in out if s != "e-commerce"]
        return sorted(out)
