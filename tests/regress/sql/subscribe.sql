-- The way back: subscriptions, the inbox, handlers run as their owner,
-- parked changes, no echoes.  The worker's part is played by calling
-- erpcrm._receive() with a search answer, as the worker does.
\set SHOW_CONTEXT never
SET timezone = 'UTC';
CREATE SCHEMA sub;
CREATE TABLE sub.orders (id serial PRIMARY KEY, hubspot_deal_id text UNIQUE, name text,
	amount numeric, status text, taken_by text);
CREATE ROLE sub_owner LOGIN IN ROLE erpcrm_admin;
CREATE ROLE sub_app LOGIN;
CREATE ROLE sub_watch LOGIN IN ROLE erpcrm_monitor;
GRANT USAGE ON SCHEMA sub TO sub_owner;
GRANT SELECT, INSERT, UPDATE ON sub.orders TO sub_owner;
GRANT USAGE ON SEQUENCE sub.orders_id_seq TO sub_owner;

-- the handler: a won deal becomes an order; 'boom' fails; it also tries what
-- a security-restricted operation forbids when asked to
CREATE FUNCTION sub.on_won(c erpcrm.hubspot_change) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	IF c.properties ->> 'dealname' = 'boom' THEN
		RAISE EXCEPTION 'deal % cannot become an order', c.hubspot_id
			USING HINT = 'Give it a proper name.';
	END IF;
	IF c.properties ->> 'dealname' = 'pause all' THEN
		PERFORM erpcrm.pause();
	END IF;
	INSERT INTO sub.orders (hubspot_deal_id, name, amount, taken_by)
	VALUES (c.hubspot_id, c.properties ->> 'dealname', (c.properties ->> 'amount')::numeric,
			current_user || ' ' || array_to_string(c.changed, ','))
	ON CONFLICT (hubspot_deal_id) DO UPDATE
	   SET name = excluded.name, amount = excluded.amount, taken_by = excluded.taken_by;
END
$$;
ALTER FUNCTION sub.on_won(erpcrm.hubspot_change) OWNER TO sub_owner;
REVOKE ALL ON FUNCTION sub.on_won(erpcrm.hubspot_change) FROM PUBLIC;
CREATE FUNCTION sub.not_a_handler(integer) RETURNS void LANGUAGE sql AS '';

-- who may subscribe, and bad definitions
SET ROLE sub_app;
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
RESET ROLE;
SET ROLE sub_owner;
SELECT erpcrm.subscribe('', 'deals', '{dealname}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'Deals', '{dealname}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{DealName}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', '{"propertyName": "dealstage"}', 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', '[{"propertyName": "dealstage", "operator": "LIKE", "value": "x"}]', 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', '[{"propertyName": "hs_lastmodifieddate", "operator": "GT", "value": "1"}]', 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', '[1, 2, 3, 4, 5]', 'sub.on_won(erpcrm.hubspot_change)');
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', NULL, NULL);
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', NULL, 'sub.not_a_handler(integer)');
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', NULL, 'erpcrm._hand_over_pending()');
RESET ROLE;
-- without EXECUTE on the handler
REVOKE EXECUTE ON FUNCTION sub.on_won(erpcrm.hubspot_change) FROM sub_owner;
SET ROLE sub_owner;
SELECT erpcrm.subscribe('won', 'deals', '{dealname}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
RESET ROLE;
GRANT EXECUTE ON FUNCTION sub.on_won(erpcrm.hubspot_change) TO sub_owner;

-- a subscription: deals won in the sales pipeline, from an hour ago
SET ROLE sub_owner;
SELECT erpcrm.subscribe('won', 'deals', '{dealname,amount,dealstage,order_status}',
	'[{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
	  {"propertyName": "pipeline", "operator": "EQ", "value": "default"},
	  {"propertyName": "amount", "operator": "GT", "value": 0}]',
	'sub.on_won(erpcrm.hubspot_change)', since => '2026-01-01 12:00:00+00') AS won \gset
RESET ROLE;
SELECT subscription, object_type, properties, handler, owner, paused, cursor, pending, parked,
	   handled, echoes, problem
  FROM erpcrm.subscriptions;
-- filter values are sent as strings, as HubSpot's schema has them
SELECT filter -> 0 -> 'filters' -> 2 AS number_as_string FROM erpcrm.subscriptions;

-- the request the worker sends: the filter, the window from the cursor, oldest first
SELECT r -> 'filterGroups' -> 0 -> 'filters' -> 0 AS first_filter,
	   r -> 'filterGroups' -> 0 -> 'filters' -> 3 AS since_filter,
	   r -> 'filterGroups' -> 0 -> 'filters' -> 4 ->> 'operator' AS until_operator,
	   r -> 'sorts' AS sorts, r -> 'properties' AS properties, r -> 'limit' AS page
  FROM erpcrm._pull_request(:won, 1000, 3) AS r;

-- an answer of three won deals (as HubSpot's search gives them)
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 3, "results": [
	  {"id": "501", "properties": {"dealname": "Big order", "amount": "100.50", "dealstage": "closedwon",
		"hs_lastmodifieddate": "2026-01-01T12:00:01.000Z"}, "updatedAt": "2026-01-01T12:00:01.000Z"},
	  {"id": "502", "properties": {"dealname": "boom", "amount": "5", "dealstage": "closedwon",
		"hs_lastmodifieddate": "2026-01-01T12:00:02.000Z"}, "updatedAt": "2026-01-01T12:00:02.000Z"},
	  {"id": "503", "properties": {"dealname": "Small order", "amount": "7", "dealstage": "closedwon",
		"hs_lastmodifieddate": "2026-01-01T12:00:03.000Z"}, "updatedAt": "2026-01-01T12:00:03.000Z"}]}') AS more;
-- the handler ran as the subscriber, and the failing change alone is parked
SELECT hubspot_deal_id, name, amount, taken_by FROM sub.orders ORDER BY 1;
SELECT subscription, hubspot_id, changed, attempts, error_sqlstate, error_message, error_hint,
	   error_context
  FROM erpcrm.parked_changes;
SELECT hubspot_id, state, attempts FROM erpcrm.inbox ORDER BY change_id;
-- a full page moved the cursor to its last change
SELECT cursor, pending, parked, handled, echoes FROM erpcrm.subscriptions;

-- the same answer again (a retry after a crash before commit would not
-- happen, but an overlapping window does): nothing is handed over twice
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 1, "results": [
	  {"id": "503", "properties": {"dealname": "Small order", "amount": "7", "dealstage": "closedwon",
		"hs_lastmodifieddate": "2026-01-01T12:00:03.000Z"}, "updatedAt": "2026-01-01T12:00:03.000Z"}]}') AS more;
SELECT count(*) AS changes, count(DISTINCT (hubspot_id, modified_at)) AS distinct_changes FROM erpcrm.inbox;
-- not a full page: the window was read to its end
SELECT cursor > '2026-01-01 12:00:03+00' AS cursor_at_window_end,
	   caught_up_to = cursor AS caught_up FROM erpcrm.subscriptions;

-- a change the handler refused: fixed, requeued, handed over again
UPDATE erpcrm.inbox SET properties = properties || '{"dealname": "Fixed"}' WHERE hubspot_id = '502';
SELECT change_id AS parked FROM erpcrm.parked_changes \gset
SELECT erpcrm.requeue_change(:parked);
SELECT erpcrm.requeue_change(:parked) AS again;
SELECT erpcrm._hand_over_pending();
SELECT hubspot_deal_id, name FROM sub.orders ORDER BY 1;
SELECT hubspot_id, state, attempts, error_message FROM erpcrm.inbox WHERE change_id = :parked;

-- discard: a parked change that is given up
UPDATE erpcrm.inbox SET properties = properties || '{"dealname": "boom"}', state = 'pending'
 WHERE change_id = :parked;
SELECT erpcrm._hand_over_pending();
SELECT count(*) AS parked FROM erpcrm.parked_changes;
SET ROLE sub_owner;
SELECT erpcrm.discard_change(:parked);
RESET ROLE;
SELECT state, discarded_by FROM erpcrm.inbox WHERE change_id = :parked;
SELECT erpcrm.discard_change(:parked) AS again, erpcrm.requeue_parked() AS requeued;

-- a handler may not change erpcrm (security-restricted operation): parked
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 1, "results": [
	  {"id": "504", "properties": {"dealname": "pause all", "amount": "1", "dealstage": "closedwon",
		"hs_lastmodifieddate": "2026-01-02T00:00:00.000Z"}, "updatedAt": "2026-01-02T00:00:00.000Z"}]}') AS more;
SELECT hubspot_id, error_sqlstate, error_message FROM erpcrm.parked_changes;
SELECT paused FROM erpcrm.control;

-- No echoes.  The ERP's order ZAM-9 updates deal 501 (its view has a
-- hubspot_id column): the ERP owns what that view sends.
CREATE VIEW sub.hs_orders AS
SELECT 'ZAM-' || o.id AS erp_id, o.hubspot_deal_id AS hubspot_id, o.status AS order_status
  FROM sub.orders o WHERE o.hubspot_deal_id IS NOT NULL;
SELECT erpcrm.map('sub_orders', 'sub.hs_orders', 'deals', on_delete => 'keep') AS sub_orders \gset
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id)
VALUES (:sub_orders, 'ZAM-9', 'synced', '501');
SELECT erpcrm._sent_properties(:sub_orders);
-- the worker also asks for the id property of the mappings of this object type
SELECT r -> 'properties' AS properties FROM erpcrm._pull_request(:won, 1000, 3) AS r;
SELECT erpcrm._erp_owned('deals', '501', '{"erp_id": "ZAM-9"}') AS owned,
	   erpcrm._erp_owned('deals', '777', '{"erp_id": "ZAM-9"}') AS other_object,
	   erpcrm._erp_owned('deals', '501', '{}') AS no_key;
-- erpcrm wrote order_status on deal 501: an echo, not handed over
-- then sales changed the amount, and erpcrm the status: handed over, once,
-- with only what HubSpot owns in "changed"
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 2, "results": [
	  {"id": "501", "properties": {"dealname": "Big order", "amount": "100.50", "dealstage": "closedwon",
		"order_status": "in progress", "erp_id": "ZAM-9", "hs_lastmodifieddate": "2026-01-02T00:00:01.000Z"}},
	  {"id": "501", "properties": {"dealname": "Big order", "amount": "120", "dealstage": "closedwon",
		"order_status": "fulfilled", "erp_id": "ZAM-9", "hs_lastmodifieddate": "2026-01-02T00:00:02.000Z"}}]}') AS more;
SELECT hubspot_id, modified_at, changed, state FROM erpcrm.inbox WHERE hubspot_id = '501' ORDER BY change_id;
SELECT echoes FROM erpcrm.subscriptions;
SELECT hubspot_deal_id, amount, taken_by FROM sub.orders WHERE hubspot_deal_id = '501';

-- a millisecond holding a full page is read by object id
UPDATE erpcrm.subscription_cursor SET modified_at = '2026-01-03 00:00:00+00';
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 5, "results": [
	  {"id": "610", "properties": {"dealname": "t1", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}},
	  {"id": "611", "properties": {"dealname": "t2", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}},
	  {"id": "612", "properties": {"dealname": "t3", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}}]}') AS more;
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 5, "results": [
	  {"id": "610", "properties": {"dealname": "t1", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}},
	  {"id": "611", "properties": {"dealname": "t2", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}},
	  {"id": "612", "properties": {"dealname": "t3", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}}]}') AS more;
SELECT r -> 'filterGroups' -> 0 -> 'filters' -> 3 AS same_millisecond,
	   r -> 'filterGroups' -> 0 -> 'filters' -> 4 AS after_id, r -> 'sorts' AS sorts
  FROM erpcrm._pull_request(:won, 1000, 3) AS r;
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 2, "results": [
	  {"id": "613", "properties": {"dealname": "t4", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}},
	  {"id": "614", "properties": {"dealname": "t5", "amount": "1", "dealstage": "closedwon", "hs_lastmodifieddate": "2026-01-03T00:00:00.000Z"}}]}') AS more;
SELECT cursor FROM erpcrm.subscriptions;
SELECT r -> 'sorts' ->> 0 AS sorted_by FROM erpcrm._pull_request(:won, 1000, 3) AS r;
SELECT count(*) AS orders_t FROM sub.orders WHERE name LIKE 't_';

-- a failed pull is the subscription's problem until a pull succeeds
SELECT erpcrm._pull_failed(:won, 'HubSpot''s search answered 403 MISSING_SCOPES: crm.objects.deals.read');
SELECT problem FROM erpcrm.subscriptions;

-- another erpcrm_admin cannot feed crafted changes to sub_owner's handler,
-- which would run them as sub_owner: only the worker, the owner and
-- superusers hand changes over
CREATE ROLE sub_other LOGIN IN ROLE erpcrm_admin;
UPDATE erpcrm.inbox SET state = 'pending' WHERE hubspot_id = '501';
SET ROLE sub_other;
SELECT erpcrm._receive(:won, erpcrm._pull_request(:won, 1000, 3),
	'{"total": 1, "results": [
	  {"id": "666", "properties": {"dealname": "Forged order", "amount": "1000000", "dealstage": "closedwon",
		"hs_lastmodifieddate": "2026-01-01T12:00:04.000Z"}, "updatedAt": "2026-01-01T12:00:04.000Z"}]}') AS more;
-- nor hand over, in its own session, a change that waits for the worker
SELECT erpcrm._hand_over_pending();
-- nor record a failed pull or an API call of sub_owner's subscription (a
-- made-up problem or share of the API), nor anything else the worker
-- records of HubSpot's answers: an erasure, HubSpot's owners, what a
-- reconcile run found
SELECT erpcrm._pull_failed(:won, 'made up');
SELECT erpcrm._log_pull_call(:won, now(), 'POST', '/crm/v3/objects/deals/search', 200, 1, NULL, NULL, '1 day');
SELECT erpcrm._log_pull_call(-1, now(), 'POST', '/crm/v3/objects/deals/search', 200, 1, NULL, NULL, '1 day');
SELECT erpcrm._erased(1, 200, 'deleted', true);
SELECT erpcrm._owners_refreshed('{1}', '{boss@example.com}', '{false}');
SELECT erpcrm._reconcile_checked(1, 0, '{}', '{}', NULL, '{}', '{}', '{}', '{}', '{}', '{}', '{}');
SELECT erpcrm._reconcile_scanned(1, 0, 0, NULL, '{}', '{}');
SELECT erpcrm._reconcile_stop(1, 0, 'done', 'made up');
-- nor log a mapping's HubSpot call, or count what a batch of it found
SELECT mapping_id AS orders_map FROM erpcrm.mapping WHERE name = 'sub_orders' \gset
SELECT erpcrm._log_call(now(), 'POST', '/crm/v3/objects/deals/batch/upsert', 200, 1, 100, NULL, NULL, :orders_map, '1 day');
SELECT erpcrm._log_call(now(), 'GET', '/account-info/v3/details', 200, 1, 0, NULL, NULL, NULL, '1 day');
SELECT erpcrm._owner_misses(:orders_map, 1000);
SELECT erpcrm._unchanged(:orders_map, 1000);
RESET ROLE;
SELECT count(*) AS calls_logged FROM erpcrm.api_log WHERE path LIKE '/crm/v3/objects/deals/batch/upsert%';
SELECT problem, calls_last_hour FROM erpcrm.subscriptions;
-- not even through a SECURITY DEFINER function a superuser calls
CREATE FUNCTION sub.feed(integer) RETURNS boolean LANGUAGE sql SECURITY DEFINER
	AS $$ SELECT erpcrm._receive($1, erpcrm._pull_request($1, 1000, 3), '{"results": []}') $$;
ALTER FUNCTION sub.feed(integer) OWNER TO sub_other;
SELECT sub.feed(:won);
DROP FUNCTION sub.feed(integer);
SELECT count(*) AS forged FROM sub.orders WHERE hubspot_deal_id = '666';
SELECT count(*) AS forged_in_inbox FROM erpcrm.inbox WHERE hubspot_id = '666';
-- the owner may (its handler runs as itself anyway)
SET ROLE sub_owner;
SELECT erpcrm._hand_over_pending() AS owner_hands_over;
RESET ROLE;
DROP ROLE sub_other;

-- monitoring: the monitor sees the subscriptions and the parked changes,
-- not the changes' data, and changes nothing
SET ROLE sub_watch;
SELECT subscription, paused, pending, parked FROM erpcrm.subscriptions;
SELECT count(*) AS parked FROM erpcrm.parked_changes;
SELECT * FROM erpcrm.inbox;
SELECT erpcrm.requeue_parked();
SELECT erpcrm._receive(:won, '{}', '{}');
RESET ROLE;
SET ROLE sub_app;
SELECT * FROM erpcrm.subscriptions;
SELECT erpcrm.unsubscribe('won');
RESET ROLE;

-- pause and resume
SET ROLE sub_owner;
SELECT erpcrm.pause_subscription('won');
SELECT erpcrm.pause_subscription('nobody');
RESET ROLE;
SELECT subscription, paused FROM erpcrm.subscriptions;
SELECT count(*) AS due FROM erpcrm._subscriptions_due(1000);
UPDATE erpcrm.inbox SET state = 'pending' WHERE hubspot_id = '504';
SELECT erpcrm._hand_over_pending() AS handed_while_paused;
SELECT erpcrm.resume_subscription('won');
SELECT subscription, paused FROM erpcrm.subscriptions;

-- redefining keeps the cursor; the object type cannot change
SELECT cursor AS before FROM erpcrm.subscriptions \gset
SET ROLE sub_owner;
SELECT erpcrm.subscribe('won', 'deals', '{dealname,amount}', NULL, 'sub.on_won(erpcrm.hubspot_change)') = :won AS same;
SELECT erpcrm.subscribe('won', 'companies', '{name}', NULL, 'sub.on_won(erpcrm.hubspot_change)');
RESET ROLE;
SELECT cursor = :'before' AS cursor_kept, properties, filter FROM erpcrm.subscriptions;

-- the inbox's history: changes handled or discarded longer than
-- erpcrm.inbox_retention ago (7d here) are deleted by the worker, a bounded
-- step at a time, but each object's latest change (the next one's base)
-- and parked changes stay
INSERT INTO erpcrm.inbox (subscription_id, hubspot_id, modified_at, properties, changed, state, handled_at)
VALUES (:won, '900', '2025-01-01', '{}', '{}', 'done', now() - interval '8 days'),
	   (:won, '900', '2025-01-02', '{}', '{}', 'done', now() - interval '9 days'),
	   (:won, '900', '2025-01-03', '{}', '{}', 'done', now() - interval '8 days'),
	   (:won, '900', '2024-12-01', '{}', '{}', 'parked', now() - interval '30 days'),
	   (:won, '901', '2025-01-01', '{}', '{}', 'discarded', now() - interval '8 days'),
	   (:won, '901', '2025-01-02', '{}', '{}', 'done', now() - interval '1 day');
SELECT erpcrm._prune_inbox(2) AS first_step, erpcrm._prune_inbox(1000) AS second_step,
	   erpcrm._prune_inbox(1000) AS third_step;
SELECT hubspot_id, modified_at, state FROM erpcrm.inbox WHERE hubspot_id IN ('900', '901')
 ORDER BY hubspot_id, modified_at;

-- dead owners.  DROP ROLE refuses the owner of erpcrm objects in this
-- database, as PostgreSQL refuses the owner of a table; REASSIGN OWNED
-- hands them on with the role's tables and functions
CREATE ROLE sub_heir LOGIN IN ROLE erpcrm_admin;
DROP ROLE sub_owner;
REASSIGN OWNED BY sub_owner TO sub_heir;
SELECT subscription, owner, problem, owner_dropped FROM erpcrm.subscriptions;
SELECT name, owner FROM erpcrm.mapping WHERE name = 'sub_orders';
-- a role dropped from another database escapes the hook: here the owners
-- are set to the OID of a dropped role, as they would be found
CREATE ROLE sub_gone;
SELECT oid AS gone FROM pg_roles WHERE rolname = 'sub_gone' \gset
DROP ROLE sub_gone;
UPDATE erpcrm.subscription SET owner = :gone;
UPDATE erpcrm.mapping SET owner = :gone WHERE name = 'sub_orders';
SELECT subscription, owner = :'gone' AS owner_shown_by_oid, owner_dropped,
	   replace(problem, :'gone', 'N') AS problem
  FROM erpcrm.subscriptions;
SELECT replace(problem, :'gone', 'N') AS problem FROM erpcrm.status WHERE mapping = 'sub_orders';
-- it is stopped: not pulled, and its pending changes wait
SELECT count(*) AS due FROM erpcrm._subscriptions_due(1000);
UPDATE erpcrm.inbox SET state = 'pending' WHERE hubspot_id = '501';
SELECT erpcrm._hand_over_pending() AS handed_over;
SELECT state FROM erpcrm.inbox WHERE hubspot_id = '501';
-- erpcrm.reassign_owned() gives it an owner who can run it
SELECT erpcrm.reassign_owned(:'gone', 'sub_app');
CREATE ROLE sub_heir2 LOGIN IN ROLE erpcrm_admin;
SELECT erpcrm.reassign_owned(:'gone', 'sub_heir2');
SET ROLE sub_heir2;
SELECT erpcrm.reassign_owned('sub_heir', 'sub_heir2');
RESET ROLE;
GRANT USAGE ON SCHEMA sub TO sub_heir;
GRANT SELECT ON sub.hs_orders TO sub_heir;
GRANT SELECT, INSERT, UPDATE ON sub.orders TO sub_heir;
GRANT USAGE ON SEQUENCE sub.orders_id_seq TO sub_heir;
SELECT erpcrm.reassign_owned(:'gone', 'sub_heir') AS reassigned;
SELECT subscription, owner, problem, owner_dropped FROM erpcrm.subscriptions;
SELECT problem FROM erpcrm.status WHERE mapping = 'sub_orders';
SELECT erpcrm._hand_over_pending() AS handed_over;
SELECT state FROM erpcrm.inbox WHERE hubspot_id = '501';
SELECT taken_by FROM sub.orders WHERE hubspot_deal_id = '501';
DROP ROLE sub_heir2;
-- the hint quotes a role name that needs it, as an identifier and in
-- reassign_owned()'s literal, so that both can be run as they are
CREATE ROLE "O'Brien ""Sales"" Team" IN ROLE erpcrm_admin;
REASSIGN OWNED BY sub_heir TO "O'Brien ""Sales"" Team";
DROP ROLE "O'Brien ""Sales"" Team";
SELECT '"O''Brien ""Sales"" Team"'::regrole::oid = r.oid AS literal_names_it
  FROM pg_roles r WHERE r.rolname = 'O''Brien "Sales" Team';
REASSIGN OWNED BY "O'Brien ""Sales"" Team" TO sub_heir;
DROP ROLE "O'Brien ""Sales"" Team";
SELECT subscription, owner FROM erpcrm.subscriptions;

-- unsubscribe drops the cursor and the inbox
SELECT erpcrm.unsubscribe('won'), erpcrm.unsubscribe('won') AS again;
SELECT count(*) AS inbox FROM erpcrm.inbox;
SELECT count(*) AS cursors FROM erpcrm.subscription_cursor;
SELECT erpcrm.unmap('sub_orders');
DROP SCHEMA sub CASCADE;
DROP ROLE sub_owner, sub_app, sub_watch, sub_heir;
