#!/usr/bin/python3
"""
seed_corpus.py - (re)make the seed corpora of the fuzz harnesses from the
answers of the HubSpot mock (tests/mock/hubspot_mock.py), which answers as
HubSpot documents: 200 and 207 batch answers, 400/401/403/404/409/429 and
5xx error bodies, association, read and search answers, properties,
pipelines, account details, token info.

    python3 tests/fuzz/seed_corpus.py      (from the repository root)

It writes corpus/<harness>/seed-<what>.json; files of other names (the
regression inputs of fixed crashes, hand-written seeds) are left alone.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "..", "mock", "hubspot_mock.py")
TOKEN = "fuzz-seed-token"


class Mock:
    def __init__(self):
        self.dir = tempfile.mkdtemp()
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen(
            [sys.executable, MOCK, "--port", "0", "--port-file", port_file,
             "--seed", "7", "--token", TOKEN],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(port_file) and os.path.getsize(port_file):
                break
            time.sleep(0.1)
        with open(port_file) as f:
            self.base = "http://127.0.0.1:%d" % int(f.read())

    def call(self, method, path, body=None, token=TOKEN):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data,
                                     method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def control(self, path, body):
        return self.call("POST", "/_mock/" + path, body, token=None)

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def save(harness, name, status, body):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-%s-%d.json" % (name, status)), "wb") as f:
        f.write(body)


def main():
    m = Mock()
    try:
        m.control("reset", {
            "unique_properties": {"companies": ["erp_id"],
                                  "contacts": ["erp_id"],
                                  "products": ["erp_id"]},
            "properties": {"companies": [{"name": "nip", "type": "string"}]},
            "shuffle_results": True})
        up = "/crm/v3/objects/companies/batch/upsert"
        inputs = [{"idProperty": "erp_id", "id": str(i),
                   "properties": {"erp_id": str(i), "name": "Firma %d \u017c\u00f3\u0142\u0107 \"q\"" % i,
                                  "nip": "52600012%02d" % i}}
                  for i in range(1, 4)]

        # batch answers
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_batch", "upsert-new", s, b)
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_batch", "upsert-existing", s, b)
        m.control("faults", {"reject_ids": ["2"]})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_batch", "upsert-partial", s, b)
        m.control("faults", {})
        bad = [dict(inputs[0], properties={"erp_id": "1", "nosuch": "x"}),
               inputs[1]]
        s, b = m.call("POST", up, {"inputs": bad})
        save("fuzz_batch", "upsert-unknown-property", s, b)
        save("fuzz_error", "upsert-unknown-property", s, b)
        ids = [o["id"] for o in json.loads(
            m.call("GET", "/_mock/objects/companies", token=None)[1])["results"]]
        s, b = m.call("POST", "/crm/v3/objects/companies/batch/update",
                      {"inputs": [{"id": ids[0], "properties": {"name": "X"}},
                                  {"id": "999999", "properties": {"name": "Y"}}]})
        save("fuzz_batch", "update-missing", s, b)
        save("fuzz_error", "update-missing", s, b)
        s, b = m.call("POST", "/crm/v3/objects/companies/batch/read",
                      {"inputs": [{"id": i} for i in ids],
                       "properties": ["erp_id", "name"]})
        save("fuzz_property", "read", s, b)
        save("fuzz_batch", "read", s, b)
        s, b = m.call("POST", "/crm/v3/objects/companies/search",
                      {"filterGroups": [{"filters": [
                          {"propertyName": "erp_id", "operator": "IN",
                           "values": ["1", "3"]}]}],
                       "properties": ["erp_id"], "limit": 100})
        save("fuzz_property", "search", s, b)

        # associations
        s, b = m.call("POST", "/crm/v3/objects/contacts/batch/upsert",
                      {"inputs": [{"idProperty": "erp_id", "id": "10",
                                   "properties": {"erp_id": "10",
                                                  "email": "a@b.pl"}}]})
        contact = json.loads(b)["results"][0]["id"]
        s, b = m.call("POST", "/crm/v4/associations/contacts/companies/batch/associate/default",
                      {"inputs": [{"from": {"id": contact}, "to": {"id": ids[0]}}]})
        save("fuzz_batch", "associate-default", s, b)
        s, b = m.call("POST", "/crm/v4/associations/contacts/companies/batch/create",
                      {"inputs": [{"from": {"id": contact}, "to": {"id": ids[1]},
                                   "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                              "associationTypeId": 279}]}]})
        save("fuzz_batch", "associate-create", s, b)
        s, b = m.call("POST", "/crm/v4/associations/contacts/companies/batch/create",
                      {"inputs": [{"from": {"id": contact}, "to": {"id": "424242"},
                                   "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                              "associationTypeId": 279}]}]})
        save("fuzz_batch", "associate-missing", s, b)
        save("fuzz_error", "associate-missing", s, b)

        # errors
        m.control("faults", {"force_status": {"count": 1, "status": 429,
                                              "policy": "TEN_SECONDLY_ROLLING"}})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_error", "ratelimit", s, b)
        m.control("faults", {"force_status": {"count": 1, "status": 429,
                                              "policy": "DAILY"}})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_error", "ratelimit-daily", s, b)
        m.control("faults", {"force_status": {"count": 1, "status": 409}})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_error", "conflict", s, b)
        m.control("faults", {"force_status": {"count": 1, "status": 502}})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_error", "bad-gateway", s, b)
        m.control("faults", {"missing_scopes": ["companies"]})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_error", "missing-scopes", s, b)
        m.control("faults", {"auth_fail": "expired"})
        s, b = m.call("POST", up, {"inputs": inputs})
        save("fuzz_error", "expired", s, b)
        m.control("faults", {})
        s, b = m.call("POST", up, {"inputs": inputs}, token="wrong")
        save("fuzz_error", "invalid-token", s, b)
        s, b = m.call("POST", up, {"inputs": [{"id": "1"}] * 101})
        save("fuzz_error", "too-many-inputs", s, b)
        save("fuzz_batch", "too-many-inputs", s, b)

        # portal set-up and connection check
        s, b = m.call("GET", "/crm/v3/properties/companies")
        save("fuzz_portal", "properties", s, b)
        s, b = m.call("GET", "/crm/v3/properties/companies/groups")
        save("fuzz_portal", "groups", s, b)
        s, b = m.call("POST", "/crm/v3/pipelines/deals",
                      {"label": "Invoices (ERP)", "displayOrder": 99,
                       "stages": [{"label": l, "displayOrder": i,
                                   "metadata": {"probability": p}}
                                  for i, (l, p) in enumerate(
                                      [("Issued", "0.5"), ("Paid", "1.0"),
                                       ("Corrected", "0.0")])]})
        save("fuzz_portal", "pipeline-created", s, b)
        s, b = m.call("GET", "/crm/v3/pipelines/deals")
        save("fuzz_portal", "pipelines", s, b)
        s, b = m.call("GET", "/account-info/v3/details")
        save("fuzz_portal", "account", s, b)
        s, b = m.call("POST", "/oauth/v2/private-apps/get/access-token-info",
                      {"tokenKey": TOKEN})
        save("fuzz_portal", "token-info", s, b)
    finally:
        m.close()


if __name__ == "__main__":
    main()
