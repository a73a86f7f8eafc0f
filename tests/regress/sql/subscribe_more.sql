-- The way back, continued: filters with OR (HubSpot's filterGroups, with
-- its limits), and the associations each change carries.  The worker's part
-- is played by calling erpcrm._receive() with a search answer and the v4
-- batch/read answers, as the worker does.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
CREATE SCHEMA subm;
CREATE TABLE subm.orders (hubspot_deal_id text PRIMARY KEY, customer_erp_id text,
	customer_hubspot_id text, contacts text);
CREATE ROLE subm_owner LOGIN IN ROLE erpcrm_admin;
GRANT USAGE ON SCHEMA subm TO subm_owner;
GRANT SELECT, INSERT, UPDATE ON subm.orders TO subm_owner;
-- the handler: an order for a won deal, its customer from the deal's company
CREATE FUNCTION subm.on_won(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO subm.orders VALUES (c.hubspot_id,
		c.associations -> 'companies' -> 0 ->> 'erp_id',
		c.associations -> 'companies' -> 0 ->> 'hubspot_id',
		(SELECT string_agg(x ->> 'hubspot_id', ',') FROM jsonb_array_elements(c.associations -> 'contacts') x))
	ON CONFLICT (hubspot_deal_id) DO UPDATE
	   SET customer_erp_id = excluded.customer_erp_id,
		   customer_hubspot_id = excluded.customer_hubspot_id, contacts = excluded.contacts;
END
$$;
ALTER FUNCTION subm.on_won(erpcrm.hubspot_change) OWNER TO subm_owner;

SET ROLE subm_owner;
-- filters with OR: HubSpot's limits, counting the 2 filters erpcrm adds to every group
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', '{"filterGroups": [
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "a"}]},
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "b"}]},
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "c"}]},
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "d"}]},
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "e"}]},
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "f"}]}]}',
	'subm.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', '[
	{"filters": [{"propertyName": "amount", "operator": "GT", "value": "1"},
				 {"propertyName": "amount", "operator": "GT", "value": "2"},
				 {"propertyName": "amount", "operator": "GT", "value": "3"},
				 {"propertyName": "amount", "operator": "GT", "value": "4"},
				 {"propertyName": "amount", "operator": "GT", "value": "5"}]}]',
	'subm.on_won(erpcrm.hubspot_change)');
-- 4 groups of 3 filters: 12, and 8 of erpcrm's, are more than 18
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', (SELECT jsonb_build_object('filterGroups', jsonb_agg(
	jsonb_build_object('filters', jsonb_build_array(
		jsonb_build_object('propertyName', 'dealstage', 'operator', 'EQ', 'value', 's' || g),
		jsonb_build_object('propertyName', 'pipeline', 'operator', 'EQ', 'value', 'p' || g),
		jsonb_build_object('propertyName', 'amount', 'operator', 'GT', 'value', g)))))
	FROM generate_series(1, 4) g), 'subm.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', '[{"filters": []}]', 'subm.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', '[{"filters": [{"propertyName": "amount", "operator": "GT", "value": "1"}], "sorts": []}]',
	'subm.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', '{"filterGroups": [], "limit": 5}', 'subm.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', '[{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "1"}]}]',
	'subm.on_won(erpcrm.hubspot_change)');
-- bad associations
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', NULL, 'subm.on_won(erpcrm.hubspot_change)',
	associations => '{Companies}');
SELECT erpcrm.subscribe('f', 'deals', '{dealname}', NULL, 'subm.on_won(erpcrm.hubspot_change)',
	associations => '{companies,contacts,companies}');

-- won deals of two pipelines (OR), with their companies and contacts
SELECT erpcrm.subscribe('won', 'deals', '{dealname,amount}', '{"filterGroups": [
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
				 {"propertyName": "pipeline", "operator": "EQ", "value": "default"}]},
	{"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "won_b2b"},
				 {"propertyName": "pipeline", "operator": "EQ", "value": "b2b"},
				 {"propertyName": "amount", "operator": "GT", "value": 1000}]}]}',
	'subm.on_won(erpcrm.hubspot_change)', since => '2026-01-01 12:00:00+00',
	associations => '{companies,contacts}') AS won \gset
RESET ROLE;
SELECT subscription, filter, associations FROM erpcrm.subscriptions;
-- the request: the window on hs_lastmodifieddate is ANDed into every group
SELECT jsonb_array_length(r -> 'filterGroups') AS groups,
	   g -> 'filters' -> -2 ->> 'operator' AS since, g -> 'filters' -> -1 ->> 'operator' AS until,
	   g -> 'filters' -> -1 ->> 'propertyName' AS by, jsonb_array_length(g -> 'filters') AS filters
  FROM erpcrm._pull_request(:won, 1000, 3) AS r, jsonb_array_elements(r -> 'filterGroups') g;
-- a subscription without a filter: one group, erpcrm's alone
SET ROLE subm_owner;
SELECT erpcrm.subscribe('all', 'contacts', '{email}', NULL, 'subm.on_won(erpcrm.hubspot_change)') AS all_contacts \gset
RESET ROLE;
-- its cursor starts now: move it back a second, or a fast machine asks
-- within the same millisecond and there is nothing settled to ask for yet
UPDATE erpcrm.subscription_cursor SET modified_at = modified_at - interval '1 second'
 WHERE subscription_id = :all_contacts;
SELECT jsonb_array_length(r -> 'filterGroups') AS groups,
	   jsonb_path_query_array(r, '$.filterGroups[*].filters[*].operator') AS operators,
	   jsonb_path_query_array(r, '$.filterGroups[*].filters[*].propertyName') AS properties,
	   r -> 'sorts' AS sorts
  FROM erpcrm._pull_request(:all_contacts, 0, 3) AS r;
SELECT erpcrm.unsubscribe('all');

-- the company erpcrm synced for customer K-7, and one it did not
CREATE VIEW subm.hs_customers AS SELECT 'x'::text AS erp_id, 'x'::text AS name;
SELECT erpcrm.map('subm_customers', 'subm.hs_customers', 'companies') AS customers \gset
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id)
VALUES (:customers, 'K-7', 'synced', '9001');

-- a page of two deals: 601 with a company and two contacts, 602 with none
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 2, "results": [
	  {"id": "601", "properties": {"dealname": "Won", "amount": "10",
		"hs_lastmodifieddate": "2026-01-01T12:00:01.000Z"}},
	  {"id": "602", "properties": {"dealname": "Alone", "amount": "20",
		"hs_lastmodifieddate": "2026-01-01T12:00:02.000Z"}}]}',
	'{"companies": {"status": "COMPLETE", "results": [
		{"from": {"id": "601"}, "to": [{"toObjectId": 9001, "associationTypes":
			[{"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"}]}]}],
		"numErrors": 1, "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND",
			"message": "No companies is associated with deals 602.", "context": {"fromObjectId": ["602"]}}]},
	  "contacts": {"status": "COMPLETE", "results": [
		{"from": {"id": "601"}, "to": [
			{"toObjectId": 77, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3}]},
			{"toObjectId": 8, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3}]}]}]}}') AS more;
SELECT hubspot_id, associations FROM erpcrm.inbox ORDER BY change_id;
SELECT * FROM subm.orders ORDER BY 1;

-- what the handler gets, as a column of erpcrm.hubspot_change
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'erpcrm.hubspot_change'::regclass AND attnum > 0 ORDER BY attnum;

-- erasing a person also drops it where changes carry it as an association
CREATE VIEW subm.hs_people AS SELECT 'x'::text AS erp_id, 'x'::text AS email;
SELECT erpcrm.map('subm_people', 'subm.hs_people', 'contacts') AS people \gset
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id)
VALUES (:people, 'P-77', 'synced', '77');
SELECT erpcrm.forget('subm_people', 'P-77') > 0 AS erased;
SELECT hubspot_id, jsonb_path_query_array(associations, '$.contacts[*].hubspot_id') AS contacts,
	   jsonb_path_query_array(associations, '$.companies[*].hubspot_id') AS companies
  FROM erpcrm.inbox ORDER BY change_id;

SELECT erpcrm.unsubscribe('won');
SELECT erpcrm.unmap('subm_customers');
SELECT erpcrm.unmap('subm_people');
DROP SCHEMA subm CASCADE;
DROP ROLE subm_owner;
