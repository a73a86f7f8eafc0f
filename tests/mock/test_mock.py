#!/usr/bin/python3
"""
test_mock.py - fast self-test of the HubSpot mock (stdlib unittest).

Starts the mock on a free port as a subprocess and checks the behaviour the
erpcrm tests rely on.  Run: python3 tests/mock/test_mock.py
"""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, "hubspot_mock.py")
TOKEN = "test-token"


def start_mock(tmp, *extra):
    pf = os.path.join(tmp, "port-%d" % len(os.listdir(tmp)))
    proc = subprocess.Popen(
        [sys.executable, MOCK, "--port", "0", "--port-file", pf,
         "--seed", "7"] + list(extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while not os.path.exists(pf):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("mock did not start: %s"
                               % proc.stderr.read().decode())
        time.sleep(0.02)
    with open(pf) as f:
        port = int(f.read())
    line = proc.stdout.readline().decode()
    if line.strip() != "listening on %d" % port:
        raise RuntimeError("unexpected stdout: %r" % line)
    return proc, port


class MockTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hsmock")
        cls.proc, cls.port = start_mock(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(5)
        cls.proc.stdout.close()
        cls.proc.stderr.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=10)
        self.ctl("POST", "/_mock/reset", {
            "unique_properties": {"companies": ["erp_id"],
                                  "deals": ["erp_id"],
                                  "contacts": ["erp_id"]},
            "properties": {"companies": [{"name": "nip"}]}})

    def tearDown(self):
        self.conn.close()

    # -- helpers -------------------------------------------------------------

    def raw(self, method, path, body=None, token=TOKEN, conn=None):
        conn = conn or self.conn
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = None if body is None else (
            body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return r, r.read()

    def call(self, method, path, body=None, token=TOKEN):
        r, data = self.raw(method, path, body, token)
        return r.status, (json.loads(data) if data else None), r

    def ctl(self, method, path, body=None):
        st, out, _ = self.call(method, path, body, token=None)
        self.assertLess(st, 300, out)
        return out

    def upsert(self, t, rows, idp="erp_id"):
        return self.call("POST", "/crm/v3/objects/%s/batch/upsert" % t, {
            "inputs": [{"idProperty": idp, "id": k, "properties": p}
                       for k, p in rows]})

    def assert_error_shape(self, out, category):
        for k in ("status", "message", "correlationId", "category"):
            self.assertIn(k, out)
        self.assertEqual(out["status"], "error")
        self.assertEqual(out["category"], category)

    # -- objects -------------------------------------------------------------

    def test_upsert_create_update_new_and_order(self):
        rows = [("K-%d" % i, {"name": "Firma %d" % i}) for i in range(6)]
        st, out, r = self.upsert("companies", rows)
        self.assertEqual(st, 200, out)
        self.assertEqual(out["status"], "COMPLETE")
        self.assertTrue(r.getheader("X-HubSpot-Correlation-Id"))
        got = [x["properties"]["erp_id"] for x in out["results"]]
        self.assertEqual(sorted(got), [k for k, _ in rows])
        self.assertNotEqual(got, [k for k, _ in rows], "order must differ")
        self.assertTrue(all(x["new"] for x in out["results"]))
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        for x in out["results"]:
            self.assertTrue(x["id"].isdigit())
            self.assertEqual(x["properties"]["name"],
                             "Firma %s" % x["properties"]["erp_id"][2:])
        st, out, _ = self.upsert("companies", [("K-1", {"name": "Nowa"}),
                                               ("K-9", {"name": "Dziewiec"})])
        self.assertEqual(st, 200, out)
        by = {x["properties"]["erp_id"]: x for x in out["results"]}
        self.assertFalse(by["K-1"]["new"])
        self.assertEqual(by["K-1"]["id"], ids["K-1"])
        self.assertEqual(by["K-1"]["properties"]["name"], "Nowa")
        self.assertTrue(by["K-9"]["new"])
        objs = self.ctl("GET", "/_mock/objects/companies")["results"]
        self.assertEqual(len(objs), 7)
        st, one, _ = self.call("GET", "/crm/v3/objects/companies/%s?"
                               "properties=name,erp_id" % ids["K-1"])
        self.assertEqual(st, 200)
        self.assertEqual(one["properties"], {"name": "Nowa", "erp_id": "K-1"})

    def test_207_reject_ids_and_validation(self):
        self.ctl("POST", "/_mock/faults", {"reject_ids": ["K-2"]})
        st, out, _ = self.upsert("companies", [
            ("K-1", {"name": "a"}), ("K-2", {"name": "b"}),
            ("K-3", {"numberofemployees": "dużo"}), ("K-4", {"name": "d"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["numErrors"], 2)
        failed = sorted(e["context"]["ids"][0] for e in out["errors"])
        self.assertEqual(failed, ["K-2", "K-3"])
        for e in out["errors"]:
            self.assertEqual(e["status"], "error")
            self.assertEqual(e["category"], "VALIDATION_ERROR")
        self.assertEqual(sorted(x["properties"]["erp_id"]
                                for x in out["results"]), ["K-1", "K-4"])
        self.assertEqual(len(self.ctl("GET", "/_mock/objects/companies")
                             ["results"]), 2)

    def test_value_length_limit(self):
        # HubSpot takes at most 65,536 characters (UTF-16 code units)
        ok = "x" * 65536
        emoji = "\U0001F600" * 32769          # 65,538 UTF-16 units
        st, out, _ = self.upsert("companies", [
            ("K-1", {"name": ok}), ("K-2", {"name": ok + "y"}),
            ("K-3", {"name": emoji})])
        self.assertEqual(st, 207, out)
        failed = sorted(e["context"]["ids"][0] for e in out["errors"])
        self.assertEqual(failed, ["K-2", "K-3"])
        self.assertIn("INVALID_PROPERTY_VALUE_LENGTH", out["errors"][0]["message"])
        self.assertEqual([x["properties"]["erp_id"] for x in out["results"]],
                         ["K-1"])

    def test_fail_ids(self):
        self.ctl("POST", "/_mock/faults", {"fail_ids": {"ids": ["K-2"]}})
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                               ("K-2", {"name": "b"})])
        self.assertEqual(st, 500, out)
        self.assert_error_shape(out, "INTERNAL_ERROR")
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        self.assertEqual(st, 200, out)

    def test_unknown_property_all_fail_400(self):
        st, out, _ = self.upsert("companies", [("K-1", {"foo": "x"})])
        self.assertEqual(st, 400, out)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        self.assertIn('Property \\"foo\\" does not exist', out["message"])
        self.assertIn("PROPERTY_DOESNT_EXIST", out["message"])
        self.assertEqual(out["errors"][0]["context"], {"ids": ["K-1"]})

    def test_batch_limits_and_shape(self):
        rows = [("K-%d" % i, {"name": "x"}) for i in range(101)]
        st, out, _ = self.upsert("companies", rows)
        self.assertEqual(st, 400)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        self.assertIn("100", out["message"])
        st, out, _ = self.upsert("companies", rows[:100])
        self.assertEqual(st, 200)
        st, out, _ = self.upsert("companies", [("name", {})], idp="name")
        self.assertEqual(st, 400)
        self.assertIn("non-unique", out["message"])
        st, out, _ = self.upsert("companies", [("A", {}), ("A", {})])
        self.assertEqual(st, 400)
        self.assertIn("Duplicate IDs", out["message"])
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "upsert", {"inputs": [{"id": "A",
                                                      "idProperty": "erp_id",
                                                      "propertiez": {}}]})
        self.assertEqual(st, 400)
        self.assertIn("propertiez", out["message"])
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "upsert", {})
        self.assertEqual(st, 400)
        st, out, _ = self.upsert("companies", [("K-1", {"name": {"a": 1}})])
        self.assertEqual(st, 400)
        self.assertEqual(len(self.ctl("GET", "/_mock/objects/companies")
                             ["results"]), 100)

    def test_archive_and_unique_release(self):
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        oid = out["results"][0]["id"]
        st, out, r = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "archive", {"inputs": [{"id": oid},
                                                      {"id": "999999"}]})
        self.assertEqual(st, 204)
        self.assertIsNone(out)
        self.assertEqual(r.getheader("Content-Length"), None)
        st, out, _ = self.call("GET", "/crm/v3/objects/companies/" + oid)
        self.assertEqual(st, 404)
        self.assert_error_shape(out, "OBJECT_NOT_FOUND")
        st, out, _ = self.upsert("companies", [("K-1", {"name": "b"})])
        self.assertTrue(out["results"][0]["new"])
        self.assertNotEqual(out["results"][0]["id"], oid)
        objs = {o["id"]: o for o in
                self.ctl("GET", "/_mock/objects/companies")["results"]}
        self.assertTrue(objs[oid]["archived"])
        self.assertEqual(objs[oid]["properties"]["name"], "a")

    def test_update_create_conflict_and_search(self):
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                               ("K-2", {"name": "b"})])
        ids = {x["properties"]["erp_id"]: x["id"] for x in out["results"]}
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "update", {"inputs": [
                                   {"id": ids["K-1"],
                                    "properties": {"erp_id": "K-2"}},
                                   {"id": "424242", "properties": {}},
                                   {"id": ids["K-2"],
                                    "properties": {"city": "Kraków"}}]})
        self.assertEqual(st, 207, out)
        cats = sorted(e["category"] for e in out["errors"])
        self.assertEqual(cats, ["CONFLICT", "OBJECT_NOT_FOUND"])
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "update", {"inputs": [
                                   {"id": "424242", "properties": {}}]})
        self.assertEqual(st, 404)
        # create: one bad input without objectWriteTraceId fails the batch
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "create", {"inputs": [
                                   {"properties": {"name": "ok"}},
                                   {"properties": {"bad": "x"}}]})
        self.assertEqual(st, 400)
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/batch/"
                               "create", {"inputs": [
                                   {"properties": {"name": "ok"},
                                    "objectWriteTraceId": "t1"},
                                   {"properties": {"bad": "x"},
                                    "objectWriteTraceId": "t2"}]})
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"],
                         {"objectWriteTraceId": ["t2"]})
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search", {
            "filterGroups": [{"filters": [{"propertyName": "erp_id",
                                           "operator": "EQ",
                                           "value": "K-2"}]}],
            "properties": ["city"], "limit": 10})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["total"], 1)
        self.assertEqual(out["results"][0]["properties"]["city"], "Kraków")
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               {"limit": 201})
        self.assertEqual(st, 400)

    def test_deal_pipeline_and_line_item_rules(self):
        st, pl, _ = self.call("POST", "/crm/v3/pipelines/deals", {
            "label": "Faktury", "displayOrder": 5, "stages": [
                {"label": "Wystawiona", "displayOrder": 0,
                 "metadata": {"probability": "0.5"}},
                {"label": "Zapłacona", "displayOrder": 1,
                 "metadata": {"probability": "1.0"}}]})
        self.assertEqual(st, 201, pl)
        stage = pl["stages"][1]["id"]
        st, out, _ = self.call("GET", "/crm/v3/pipelines/deals/" + pl["id"])
        self.assertEqual(out["label"], "Faktury")
        st, out, _ = self.call("POST", "/crm/v3/pipelines/deals", {
            "label": "Zla", "displayOrder": 6, "stages": [
                {"label": "X", "displayOrder": 0,
                 "metadata": {"probability": "1.5"}}]})
        self.assertEqual(st, 400)
        st, out, _ = self.upsert("deals", [
            ("F-1", {"dealname": "FV 1", "pipeline": pl["id"],
                     "dealstage": stage, "amount": "6000.00",
                     "closedate": "2026-03-01"}),
            ("F-2", {"dealname": "FV 2", "pipeline": pl["id"],
                     "dealstage": "closedwon"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"]["ids"], ["F-2"])
        self.assertIn("INVALID_OPTION", out["errors"][0]["message"])
        st, out, _ = self.call("POST", "/crm/v3/objects/line_items/batch/"
                               "create", {"inputs": [
                                   {"properties": {"name": "x",
                                                   "price": "-1"}}]})
        self.assertEqual(st, 400)

    # -- associations --------------------------------------------------------

    def test_associations_v4(self):
        _, co, _ = self.upsert("companies", [("K-1", {"name": "a"})])
        _, ct, _ = self.upsert("contacts", [("P-1", {"email": "a@b.pl"})])
        _, dl, _ = self.upsert("deals", [("D-1", {"dealname": "d"})])
        cid, pid, did = (co["results"][0]["id"], ct["results"][0]["id"],
                         dl["results"][0]["id"])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/contacts/companies/batch/associate/"
            "default", {"inputs": [{"from": {"id": pid}, "to": {"id": cid}}]})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["results"][0]["associationSpec"]
                         ["associationTypeId"], 279)
        # HubSpot's schema has no 207 for associate/default: errors in a 200
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/contacts/companies/batch/associate/"
            "default", {"inputs": [{"from": {"id": pid}, "to": {"id": cid}},
                                   {"from": {"id": pid},
                                    "to": {"id": "777777"}}]})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["numErrors"], 1)
        st, out, _ = self.call("GET", "/crm/v4/objects/companies/%s/"
                               "associations/contacts" % cid)
        self.assertEqual(out["results"][0]["toObjectId"], pid)
        self.assertEqual([x["typeId"] for x in
                          out["results"][0]["associationTypes"]], [280])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/companies/batch/create",
            {"inputs": [
                {"from": {"id": did}, "to": {"id": cid},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": 341}]},
                {"from": {"id": did}, "to": {"id": "777777"},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": 341}]}]})
        self.assertEqual(st, 207, out)
        self.assertEqual(out["numErrors"], 1)
        links = self.ctl("GET", "/_mock/associations")["results"]
        have = {(a["fromType"], a["fromId"], a["toType"], a["toId"],
                 a["typeId"]) for a in links}
        self.assertIn(("deals", did, "companies", cid, 341), have)
        self.assertIn(("companies", cid, "deals", did, 342), have)
        self.assertIn(("contacts", pid, "companies", cid, 279), have)
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/companies/batch/create",
            {"inputs": [{"from": {"id": did}, "to": {"id": cid},
                         "types": [{"associationTypeId": "341"}]}]})
        self.assertEqual(st, 400)
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/companies/batch/archive",
            {"inputs": [{"from": {"id": did}, "to": [{"id": cid}]}]})
        self.assertEqual(st, 204)
        st, out, _ = self.call("GET", "/crm/v4/objects/companies/%s/"
                               "associations/deals" % cid)
        self.assertEqual(out["results"], [])
        # user-defined deal->deal label
        st, lab, _ = self.call("POST", "/crm/v4/associations/deals/deals/"
                               "labels", {"label": "Zamówienie",
                                          "name": "order_invoice",
                                          "inverseLabel": "Faktura"})
        self.assertEqual(st, 200, lab)
        tid = lab["results"][0]["typeId"]
        _, d2, _ = self.upsert("deals", [("D-2", {"dealname": "e"})])
        st, out, _ = self.call(
            "POST", "/crm/v4/associations/deals/deals/batch/create",
            {"inputs": [{"from": {"id": did},
                         "to": {"id": d2["results"][0]["id"]},
                         "types": [{"associationCategory": "USER_DEFINED",
                                    "associationTypeId": tid}]}]})
        self.assertEqual(st, 201, out)
        self.assertEqual(out["results"][0]["labels"], ["Zamówienie"])
        # ids are strings, as HubSpot's schema says
        self.assertEqual(out["results"][0]["fromObjectId"], did)
        self.assertEqual(out["results"][0]["toObjectId"],
                         d2["results"][0]["id"])
        # the current label paths serve the same labels as the old one
        old = self.call("GET", "/crm/v4/associations/deals/deals/labels")[1]
        for path in ("/crm/associations/v4/deals/deals/labels",
                     "/crm/associations/2026-03/deals/deals/labels"):
            st, cur, _ = self.call("GET", path)
            self.assertEqual(st, 200, cur)
            self.assertEqual(cur, old)
        st, lab, _ = self.call("POST", "/crm/associations/v4/deals/deals/"
                               "labels", {"label": "Oferta",
                                          "name": "offer_deal"})
        self.assertEqual(st, 200, lab)

    # -- no kinder than HubSpot (issue 11, point 9) --------------------------

    def test_no_null_property_values(self):
        self.upsert("companies", [("K-1", {"name": "a"})])
        st, out, _ = self.call(
            "POST", "/crm/v3/objects/companies/batch/read",
            {"inputs": [{"id": "K-1"}], "idProperty": "erp_id",
             "properties": ["name", "domain", "nip"]})
        self.assertEqual(st, 200, out)
        props = out["results"][0]["properties"]
        self.assertEqual(props["name"], "a")
        self.assertNotIn("domain", props)
        self.assertTrue(all(isinstance(v, str) for v in props.values()))

    def test_upsert_whole_batch_mode(self):
        rows = [("K-1", {"name": "a"}), ("K-2", {"nip": "x", "bogus": "1"})]
        st, out, _ = self.upsert("companies", rows)
        self.assertEqual(st, 207, out)
        self.ctl("POST", "/_mock/config", {"upsert_whole_batch": True})
        self.ctl("POST", "/_mock/reset", {
            "unique_properties": {"companies": ["erp_id"]},
            "properties": {"companies": [{"name": "nip"}]},
            "upsert_whole_batch": True})
        st, out, _ = self.upsert("companies", rows)
        self.assertEqual(st, 400, out)
        self.assert_error_shape(out, "VALIDATION_ERROR")
        self.assertNotIn("context", out)
        objs = self.ctl("GET", "/_mock/objects/companies")["results"]
        self.assertEqual(objs, [], "nothing of the batch is written")
        st, out, _ = self.upsert("companies", rows[:1])
        self.assertEqual(st, 200, out)

    def test_search_index_delay_and_cap(self):
        # a delay no test run outlasts, then none: no race with the clock
        self.ctl("POST", "/_mock/config", {"search_index_delay_ms": 3600000,
                                           "search_max_total": 3})
        self.upsert("companies", [("K-%d" % i, {"name": "n%d" % i})
                                  for i in range(5)])
        body = {"filterGroups": [{"filters": [{"propertyName": "name",
                                               "operator": "HAS_PROPERTY"}]}],
                "limit": 2}
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual((st, out["total"]), (200, 0),
                         "just created: not indexed yet")
        self.ctl("POST", "/_mock/config", {"search_index_delay_ms": 0})
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual((st, out["total"], len(out["results"])), (200, 5, 2))
        body["after"] = out["paging"]["next"]["after"]
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual((st, len(out["results"])), (200, 1),
                         "the page is cut at the cap")
        body["after"] = "3"
        st, out, _ = self.call("POST", "/crm/v3/objects/companies/search",
                               body)
        self.assertEqual(st, 400, out)

    def test_unique_reuse_after_archive(self):
        for reuse in (True, False):
            self.ctl("POST", "/_mock/config",
                     {"unique_reuse_after_archive": reuse})
            key = "R-%s" % reuse
            _, out, _ = self.upsert("companies", [(key, {"name": "a"})])
            oid = out["results"][0]["id"]
            st, _, _ = self.call("POST",
                                 "/crm/v3/objects/companies/batch/archive",
                                 {"inputs": [{"id": oid}]})
            self.assertEqual(st, 204)
            st, out, _ = self.upsert("companies", [(key, {"name": "b"})])
            if reuse:
                self.assertEqual(st, 200, out)
                self.assertNotEqual(out["results"][0]["id"], oid)
            else:
                self.assertEqual(st, 409, out)
                self.assert_error_shape(out, "CONFLICT")
                self.assertIn(oid, out["message"])

    def test_pipeline_limits_and_granular_scopes(self):
        st, out, _ = self.call("GET", "/crm/v3/limits/pipelines")
        self.assertEqual(st, 200, out)
        deals = out["hubspotDefinedObjectTypes"][0]
        self.assertEqual((deals["objectTypeId"], deals["usage"]), ("0-3", 1))
        self.ctl("POST", "/_mock/config", {"deal_pipeline_limit": 1})
        st, out, _ = self.call("POST", "/crm/v3/pipelines/deals", {
            "label": "Invoices", "displayOrder": 1,
            "stages": [{"label": "Issued", "displayOrder": 0,
                        "metadata": {"probability": "0.5"}}]})
        self.assertEqual(st, 400, out)
        body = {"tokenKey": TOKEN}
        st, out, _ = self.call(
            "POST", "/oauth/v2/private-apps/get/access-token-info", body)
        self.assertIn("e-commerce", out["scopes"])
        self.ctl("POST", "/_mock/config", {"granular_scopes": True})
        st, out, _ = self.call(
            "POST", "/oauth/v2/private-apps/get/access-token-info", body)
        self.assertNotIn("e-commerce", out["scopes"])
        self.assertIn("crm.objects.line_items.write", out["scopes"])
        self.assertIn("crm.objects.products.write", out["scopes"])

    def test_required_properties(self):
        self.ctl("POST", "/_mock/config",
                 {"required_properties": {"companies": ["nip"]}})
        st, out, _ = self.upsert("companies", [("K-1", {"name": "a"}),
                                               ("K-2", {"name": "b",
                                                        "nip": "1"})])
        self.assertEqual(st, 207, out)
        self.assertEqual(out["errors"][0]["context"], {"ids": ["K-1"]})
        self.assertIn('REQUIRED_PROPERTY', out["errors"][0]["message"])
        st, out, _ = self.upsert("companies", [("K-2", {"name": "c"})])
        self.assertEqual(st, 200, out)  # an update need not repeat it
        st, out, _ = self.upsert("companies", [("K-2", {"nip": ""})])
        self.assertEqual(st, 400, out)  # nor may it clear it

    # -- properties ----------------------------------------------------------

    def test_property_create_and_conflict(self):
        p = {"name": "credit_limit", "label": "Limit kredytowy",
             "type": "number", "fieldType": "number",
             "groupName": "companyinformation"}
        st, out, _ = self.call("POST", "/crm/v3/properties/companies", p)
        self.assertEqual(st, 201, out)
        self.assertEqual(out["name"], "credit_limit")
        st, out, _ = self.call("POST", "/crm/v3/properties/companies", p)
        self.assertEqual(st, 409)
        self.assert_error_shape(out, "CONFLICT")
        self.assertEqual(out["message"],
                         "Property named 'credit_limit' already exists.")
        bad = dict(p, name="x2", fieldType="select")
        st, out, _ = self.call("POST", "/crm/v3/properties/companies", bad)
        self.assertEqual(st, 400)
        st, out, _ = self.call("GET", "/crm/v3/properties/companies/"
                               "credit_limit")
        self.assertEqual(out["type"], "number")
        st, out, _ = self.upsert("companies", [("K-1", {"credit_limit":
                                                        "1000.50"})])
        self.assertEqual(st, 200, out)

    # -- auth, rate limits, faults -------------------------------------------

    def test_auth_401_and_scopes_403(self):
        st, out, _ = self.call("GET", "/crm/v3/objects/companies/1",
                               token=None)
        self.assertEqual(st, 401)
        self.assert_error_shape(out, "INVALID_AUTHENTICATION")
        st, out, _ = self.call("GET", "/crm/v3/objects/companies/1",
                               token="wrong")
        self.assertEqual(st, 401)
        self.ctl("POST", "/_mock/faults", {"missing_scopes": ["products"]})
        st, out, _ = self.call("POST", "/crm/v3/objects/products/batch/"
                               "create", {"inputs": []})
        self.assertEqual(st, 403)
        self.assert_error_shape(out, "MISSING_SCOPES")
        self.assertEqual(out["errors"][0]["context"]
                         ["requiredGranularScopes"], ["e-commerce"])
        st, out, _ = self.call("POST", "/oauth/v2/private-apps/get/"
                               "access-token-info", {"tokenKey": TOKEN},
                               token=None)
        self.assertEqual(st, 200)
        self.assertIn("crm.objects.companies.write", out["scopes"])
        self.assertNotIn("e-commerce", out["scopes"])

    def test_owners_paged_and_archived(self):
        owners = [{"email": "o%d@example.com" % i} for i in range(5)]
        owners.append({"id": "99", "email": "gone@example.com",
                       "archived": True})
        self.ctl("POST", "/_mock/config", {"owners": owners})
        seen, after = [], None
        while True:
            st, out, _ = self.call(
                "GET", "/crm/v3/owners?limit=2"
                + ("&after=" + after if after else ""))
            self.assertEqual(st, 200, out)
            self.assertLessEqual(len(out["results"]), 2)
            seen += [o["email"] for o in out["results"]]
            after = out.get("paging", {}).get("next", {}).get("after")
            if not after:
                break
        self.assertEqual(seen, ["o%d@example.com" % i for i in range(5)])
        st, out, _ = self.call("GET", "/crm/v3/owners?archived=true")
        self.assertEqual([(o["id"], o["archived"]) for o in out["results"]],
                         [("99", True)])
        self.assertNotIn("paging", out)
        st, out, _ = self.call("GET", "/crm/v3/owners?limit=0")
        self.assertEqual(st, 400)

    def test_rate_limit_429(self):
        self.ctl("POST", "/_mock/config", {"max_per_window": 3,
                                           "window_ms": 10000,
                                           "retry_after": True})
        for i in range(3):
            st, out, r = self.call("GET", "/crm/v3/owners")
            self.assertEqual(st, 200)
            self.assertEqual(r.getheader("X-HubSpot-RateLimit-Remaining"),
                             str(2 - i))
        st, out, r = self.call("GET", "/crm/v3/owners")
        self.assertEqual(st, 429)
        self.assertEqual(out["policyName"], "TEN_SECONDLY_ROLLING")
        self.assertEqual(out["errorType"], "RATE_LIMIT")
        self.assertEqual(out["message"],
                         "You have reached your ten_secondly_rolling limit.")
        self.assertEqual(r.getheader("X-HubSpot-RateLimit-Max"), "3")
        self.assertEqual(r.getheader("X-HubSpot-RateLimit-Remaining"), "0")
        self.assertEqual(r.getheader("X-HubSpot-RateLimit-Daily"), "250000")
        self.assertIsNotNone(r.getheader(
            "X-HubSpot-RateLimit-Interval-Milliseconds"))
        ra = int(r.getheader("Retry-After"))
        self.assertTrue(1 <= ra <= 10)
        stats = self.ctl("GET", "/_mock/stats")
        self.assertEqual(stats["rateLimited"], 1)
        self.assertEqual(stats["maxWindowCalls"], 3)
        # search has its own per-second limit
        self.ctl("POST", "/_mock/config", {"max_per_window": 0,
                                           "search_per_second": 2})
        # (a rolling second: under load two calls may fall in different
        # seconds, so call until refused, as a client would)
        codes = []
        while 429 not in codes and len(codes) < 50:
            codes.append(self.call("POST", "/crm/v3/objects/companies/search",
                                   {})[0])
        self.assertEqual(codes[0], 200)
        self.assertEqual(codes[-1], 429)
        self.assertGreaterEqual(len(codes), 3, "two searches a second pass")

    def test_faults(self):
        self.ctl("POST", "/_mock/faults", {"malformed_share": 1.0})
        r, data = self.raw("GET", "/crm/v3/owners")
        self.assertEqual(r.status, 200)
        self.assertRaises(ValueError, json.loads, data)
        self.ctl("POST", "/_mock/faults", {"down": "503"})
        r, data = self.raw("GET", "/crm/v3/owners")
        self.assertEqual(r.status, 503)
        self.assertIn(b"<html>", data)
        self.ctl("POST", "/_mock/faults", {"down": "refuse"})
        with self.assertRaises((http.client.RemoteDisconnected,
                                ConnectionError)):
            self.raw("GET", "/crm/v3/owners")
        self.conn.close()
        self.ctl("POST", "/_mock/faults", {"truncated_share": 1.0})
        with self.assertRaises(http.client.IncompleteRead):
            self.raw("GET", "/crm/v3/owners")
        self.conn.close()
        self.ctl("POST", "/_mock/faults", {"force_status": {
            "count": 1, "status": 502, "path_contains": "owners"}})
        st, _, _ = self.call("GET", "/crm/v3/owners")
        self.assertEqual(st, 502)
        st, _, _ = self.call("GET", "/crm/v3/owners")
        self.assertEqual(st, 200)
        self.ctl("POST", "/_mock/faults", {})
        self.assertEqual(self.ctl("GET", "/_mock/faults"), {})

    def test_requests_log_and_stats(self):
        self.upsert("companies", [("K-1", {"name": "a"}),
                                  ("K-2", {"name": "b"})])
        self.call("GET", "/crm/v3/objects/companies/1", token="bad")
        log = self.ctl("GET", "/_mock/requests?since=0")
        self.assertEqual([e["status"] for e in log["results"]], [200, 401])
        e = log["results"][0]
        self.assertEqual(e["path"], "/crm/v3/objects/companies/batch/upsert")
        self.assertEqual(e["inputs"], 2)
        self.assertGreater(e["bodyBytes"], 20)
        self.assertNotIn("body", e)
        later = self.ctl("GET", "/_mock/requests?since=%d" % e["seq"])
        self.assertEqual(len(later["results"]), 1)
        stats = self.ctl("GET", "/_mock/stats")
        self.assertEqual(stats["calls"], 2)
        self.assertEqual(stats["byStatus"], {"200": 1, "401": 1})
        self.assertEqual(stats["objects"]["companies"]["active"], 2)
        self.assertGreater(stats["cpuSeconds"], 0)

    def test_keepalive(self):
        # one connection carries every request (the worker's curl handle
        # reuses it): the socket is never closed, however many calls
        self.ctl("POST", "/_mock/config", {"max_per_window": 0})
        st, _, r = self.call("GET", "/crm/v3/owners")
        sock = self.conn.sock
        self.assertIsNotNone(sock)
        for i in range(300):
            st, _, r = self.call("GET", "/crm/v3/owners")
            self.assertEqual(st, 200)
            self.assertNotEqual((r.getheader("Connection") or "").lower(),
                                "close")
            self.assertIs(self.conn.sock, sock, "request %d reconnected" % i)

    def test_tls(self):
        if not shutil.which("openssl"):
            self.skipTest("no openssl")
        d = tempfile.mkdtemp(dir=self.tmp)
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                        "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        proc, port = start_mock(self.tmp, "--tls-cert", cert, "--tls-key",
                                key)
        try:
            strict = ssl.create_default_context()
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                            context=strict)
            with self.assertRaises(ssl.SSLCertVerificationError):
                c.request("GET", "/_mock/health")
            c.close()
            ok = ssl.create_default_context(cafile=cert)
            c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                            context=ok)
            c.request("GET", "/_mock/health")
            r = c.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"ok"))
            c.close()
        finally:
            proc.terminate()
            proc.wait(5)
            proc.stdout.close()
            proc.stderr.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
