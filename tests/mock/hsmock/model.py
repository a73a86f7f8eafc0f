"""
model.py - what a HubSpot portal holds before anyone writes to it.

The standard object types and their aliases, HubSpot's own properties,
the default deal pipeline, HubSpot-defined association types, owners and
scopes; the limits HubSpot documents; value formats and small helpers.
"""

import datetime
import functools
import json
import re
import time

try:
    from zoneinfo import ZoneInfo
    PORTAL_TZ = ZoneInfo("Europe/Warsaw")
except Exception:  # pragma: no cover - tzdata missing
    PORTAL_TZ = datetime.timezone(datetime.timedelta(hours=1))

BATCH_LIMIT = 100
SEARCH_LIMIT_MAX = 200
FIRST_OBJECT_ID = 1000
PORTAL_ID = 12345678

# ---------------------------------------------------------------------------
# Static description of the standard objects
# ---------------------------------------------------------------------------

# orders: HubSpot's native order object (0-123), for commerce systems and
# ERPs; line items, contacts, companies and deals are associated to it.
STANDARD_TYPES = ["contacts", "companies", "deals", "products", "line_items",
                  "orders"]
TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3",
            "products": "0-7", "line_items": "0-8", "orders": "0-123"}
TYPE_ALIASES = {}
for _t, _id in TYPE_IDS.items():
    TYPE_ALIASES[_t] = _t
    TYPE_ALIASES[_id] = _t
    TYPE_ALIASES[_t[:-1]] = _t          # contact, company.., deal, product
TYPE_ALIASES["company"] = "companies"
TYPE_ALIASES["line_item"] = "line_items"
TYPE_ALIASES["lineitem"] = "line_items"
TYPE_ALIASES["lineitems"] = "line_items"
SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal",
            "products": "product", "line_items": "line item",
            "orders": "order"}
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation",
          "deals": "dealinformation", "products": "productinformation",
          "line_items": "lineiteminformation", "orders": "orderinformation"}

LIFECYCLE = ["subscriber", "lead", "marketingqualifiedlead",
             "salesqualifiedlead", "opportunity", "customer", "evangelist",
             "other"]

# name -> type (options None = any value accepted for an enumeration)
STANDARD_PROPS = {
    "companies": {
        "name": "string", "domain": "string", "website": "string",
        "phone": "string", "address": "string", "city": "string",
        "zip": "string", "state": "string", "country": "string",
        "industry": "enumeration", "description": "string",
        "numberofemployees": "number", "annualrevenue": "number",
        "hubspot_owner_id": "enumeration", "lifecyclestage": "enumeration",
    },
    "contacts": {
        "email": "string", "firstname": "string", "lastname": "string",
        "phone": "string", "mobilephone": "string", "jobtitle": "string",
        "company": "string", "hubspot_owner_id": "enumeration",
        "lifecyclestage": "enumeration",
        # contacts keep their last change here (a date, as search compares
        # it), not in hs_lastmodifieddate
        "lastmodifieddate": "datetime",
    },
    "deals": {
        "dealname": "string", "amount": "number", "closedate": "datetime",
        "pipeline": "enumeration", "dealstage": "enumeration",
        "hubspot_owner_id": "enumeration",
        "deal_currency_code": "enumeration", "description": "string",
        "dealtype": "enumeration",
    },
    "products": {
        "name": "string", "price": "number", "hs_sku": "string",
        "description": "string", "hs_cost_of_goods_sold": "number",
        "hs_price_pln": "number", "hs_price_eur": "number",
        "hs_price_usd": "number", "hs_recurring_billing_period": "string",
    },
    "line_items": {
        "name": "string", "quantity": "number", "price": "number",
        "discount": "number", "hs_product_id": "number",
        "hs_line_item_currency_code": "enumeration",
        "hs_position_on_quote": "number", "amount": "number",
        "description": "string", "hs_sku": "string",
    },
    "orders": {
        "hs_order_name": "string", "hs_currency_code": "enumeration",
        "hs_pipeline": "enumeration", "hs_pipeline_stage": "enumeration",
        "hs_external_order_id": "string", "hs_source_store": "string",
        "hs_subtotal_price": "number", "hs_total_price": "number",
        "hs_tax": "number", "hs_shipping_cost": "number",
        "hs_order_discount": "number", "hs_fulfillment_status": "string",
        "hs_payment_status": "string", "hs_shipping_tracking_number": "string",
        "hs_shipping_address_street": "string",
        "hs_shipping_address_city": "string",
        "hs_shipping_address_postal_code": "string",
        "hs_shipping_address_country": "string",
        "hs_billing_address_email": "string",
        "hs_external_created_date": "datetime", "hs_order_note": "string",
        "hubspot_owner_id": "enumeration",
    },
}
STANDARD_OPTIONS = {
    "lifecyclestage": LIFECYCLE,
    "dealtype": ["newbusiness", "existingbusiness"],
}
SYSTEM_PROPS = {"hs_object_id": "number", "createdate": "datetime",
                "hs_lastmodifieddate": "datetime",
                "hs_merged_object_ids": "enumeration"}
READ_ONLY = {"hs_object_id", "hs_lastmodifieddate", "lastmodifieddate",
             "hs_merged_object_ids"}

# Who wrote a value, as propertiesWithHistory names it: (sourceType,
# sourceId, updatedByUserId).  API calls come from the private app (its id
# is the appId of token info); edits by hand through the control API come
# from a user in HubSpot's CRM UI.
APP_ID = 2000001
API_SOURCE = ("INTEGRATION", str(APP_ID), None)
HISTORY_MAX = 20            # versions kept per property, newest last
BATCH_READ_HISTORY_LIMIT = 50   # batch read inputs with propertiesWithHistory

DEFAULT_READ_PROPS = {
    "companies": ["createdate", "domain", "hs_lastmodifieddate",
                  "hs_object_id", "name"],
    "contacts": ["createdate", "email", "firstname", "hs_object_id",
                 "lastmodifieddate", "lastname"],
    "deals": ["amount", "closedate", "createdate", "dealname", "dealstage",
              "hs_lastmodifieddate", "hs_object_id", "pipeline"],
    "products": ["createdate", "description", "hs_lastmodifieddate",
                 "hs_object_id", "name", "price"],
    "line_items": ["amount", "createdate", "hs_lastmodifieddate",
                   "hs_object_id", "hs_product_id", "name", "price",
                   "quantity"],
    "orders": ["createdate", "hs_lastmodifieddate", "hs_object_id",
               "hs_order_name", "hs_pipeline", "hs_pipeline_stage"],
}

FIELD_TYPES = {
    "string": {"text", "textarea", "html", "file", "phonenumber"},
    "number": {"number", "calculation_equation"},
    "date": {"date"},
    "datetime": {"date"},
    "enumeration": {"select", "radio", "checkbox", "booleancheckbox",
                    "calculation_equation"},
    "bool": {"booleancheckbox"},
    "phone_number": {"phonenumber"},
}
DEFAULT_FIELD_TYPE = {"string": "text", "number": "number", "date": "date",
                      "datetime": "date", "enumeration": "select",
                      "bool": "booleancheckbox",
                      "phone_number": "phonenumber"}

DEFAULT_STAGES = [
    ("appointmentscheduled", "Appointment Scheduled", "0.2", "false"),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", "false"),
    ("presentationscheduled", "Presentation Scheduled", "0.6", "false"),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", "false"),
    ("contractsent", "Contract Sent", "0.9", "false"),
    ("closedwon", "Closed Won", "1.0", "true"),
    ("closedlost", "Closed Lost", "0.0", "true"),
]

# The order pipeline every portal has (orders: hs_pipeline, stage ids in
# hs_pipeline_stage).  HubSpot gives it a generated id; the mock's is fixed.
ORDER_PIPELINE_ID = "14a2e10e-5471-408a-906e-c51f3b04369e"
ORDER_STAGES = [
    ("checkout_abandoned", "Checkout Abandoned"),
    ("checkout_pending", "Checkout Pending"),
    ("checkout_completed", "Checkout Completed"),
    ("processed", "Processed"),
    ("shipped", "Shipped"),
    ("cancelled", "Cancelled"),
    ("refunded", "Refunded"),
]

# (from, to, category, typeId, label, inverse typeId)
HUBSPOT_ASSOC_DEFS = [
    ("contacts", "companies", 279, None, 280),
    ("companies", "contacts", 280, None, 279),
    ("contacts", "companies", 1, "Primary", 2),
    ("companies", "contacts", 2, "Primary", 1),
    ("deals", "companies", 341, None, 342),
    ("companies", "deals", 342, None, 341),
    ("deals", "companies", 5, "Primary", 6),
    ("companies", "deals", 6, "Primary", 5),
    ("deals", "contacts", 3, None, 4),
    ("contacts", "deals", 4, None, 3),
    ("deals", "line_items", 19, None, 20),
    ("line_items", "deals", 20, None, 19),
    ("deals", "deals", 451, None, 451),
    ("companies", "companies", 13, "Parent Company", 14),
    ("companies", "companies", 14, "Child Company", 13),
    # orders (their type ids are the mock's: erpcrm associates orders with
    # HubSpot's default association, which names no type id)
    ("orders", "contacts", 507, None, 508),
    ("contacts", "orders", 508, None, 507),
    ("orders", "companies", 509, None, 510),
    ("companies", "orders", 510, None, 509),
    ("orders", "deals", 511, None, 512),
    ("deals", "orders", 512, None, 511),
    ("orders", "line_items", 513, None, 514),
    ("line_items", "orders", 514, None, 513),
]

DEFAULT_OWNERS = [
    ("75000001", "anna.nowak@example.com", "Anna", "Nowak", 9000001),
    ("75000002", "jan.kowalski@example.com", "Jan", "Kowalski", 9000002),
    ("75000003", "ewa.wisniewska@example.com", "Ewa", "Wisniewska", 9000003),
]

ALL_SCOPES_BASE = ["oauth", "crm.objects.owners.read",
                   "crm.schemas.deals.read", "crm.schemas.deals.write"]

NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?)?$")
EPOCH_RE = re.compile(r"^-?\d{1,15}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PROPNAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DATEVER_RE = re.compile(r"^\d{4}-\d{2}$")

# Date-versioned families (/crm/objects/2026-03/...) and the /crm/v3 or
# /crm/v4 paths they answer as (HubSpot serves both).
DATEVER_FAMILIES = {"objects": "v3", "properties": "v3", "pipelines": "v3",
                    "owners": "v3", "associations": "v4"}


def undated(parts):
    """A date-versioned path's parts, as the /crm/v3 (v4) path's."""
    if len(parts) >= 3 and parts[0] == "crm" and \
            parts[1] in DATEVER_FAMILIES and DATEVER_RE.match(parts[2]):
        ver = DATEVER_FAMILIES[parts[1]]
        # /crm/objects/{v}/{type}/{id}/associations/... is the v4 one
        if parts[1] == "objects" and len(parts) >= 6 and \
                parts[5] == "associations":
            ver = "v4"
        return ["crm", ver, parts[1]] + parts[3:]
    return parts


def now_iso(t=None):
    if t is None:
        t = time.time()
    # whole milliseconds, so that an epoch value reads back exactly
    s, ms = divmod(int(round(t * 1000)), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % ms


@functools.lru_cache(maxsize=1 << 16)
def iso_ms(v):
    """Epoch milliseconds of an ISO 8601 date-time (or of epoch ms), or None.
    Cached: a search compares every object's date with its filters."""
    v = str(v)
    if EPOCH_RE.match(v):
        return int(v)
    try:
        d = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return int(round(d.timestamp() * 1000))


def next_midnight_portal(t=None):
    now = datetime.datetime.fromtimestamp(t or time.time(), PORTAL_TZ)
    tomorrow = (now + datetime.timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0)
    return tomorrow


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def int_id(x):
    try:
        return int(x)
    except (TypeError, ValueError):
        return x
