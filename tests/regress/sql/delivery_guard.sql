-- delivery_guard: the functions of the delivery path are the worker's.
-- EXECUTE on them is erpcrm_admin's (the worker's role is one), but another
-- erpcrm_admin must not record a made-up HubSpot id for a key of a mapping
-- it does not own (the key's next update would go into that object), park
-- or hold back its keys, or fold, recover, count a refresh.  Besides the
-- worker, only the mapping's owner (a role with its privileges) and
-- superusers may; with no mapping, only superusers.
\set SHOW_CONTEXT never
CREATE SCHEMA dg;
CREATE ROLE dg_owner LOGIN IN ROLE erpcrm_admin;
CREATE ROLE dg_other LOGIN IN ROLE erpcrm_admin;
CREATE ROLE dg_member LOGIN IN ROLE dg_owner;
GRANT USAGE, CREATE ON SCHEMA dg TO dg_owner;
GRANT USAGE ON SCHEMA dg TO dg_other, dg_member;

SET ROLE dg_owner;
CREATE TABLE dg.co (id integer PRIMARY KEY, name text);
CREATE VIEW dg.v_co AS SELECT id::text AS erp_id, name FROM dg.co;
SELECT erpcrm.map('dg_companies', 'dg.v_co', 'companies') > 0 AS mapped;
SELECT erpcrm.watch('dg_companies', 'dg.co', 'id') > 0 AS watched;
INSERT INTO dg.co VALUES (1, 'One'), (2, 'Two'), (3, 'Three');
RESET ROLE;
SELECT mapping_id AS m FROM erpcrm.mapping WHERE name = 'dg_companies' \gset
SELECT erpcrm._fold() >= 3 AS folded;

-- each call, and what it answered (the SQLSTATE and the message)
CREATE FUNCTION dg.try(call text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE call;
	RETURN 'allowed';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
CREATE TABLE dg.calls (n serial, call text);
INSERT INTO dg.calls (call) VALUES
	('SELECT erpcrm._fold()'),
	('SELECT erpcrm._before_fold()'),
	('SELECT erpcrm._recover()'),
	(format('SELECT erpcrm._claim(%s, 10)', :m)),
	(format('SELECT erpcrm._done(%s, ''{1}'', ''{666}'')', :m)),
	(format('SELECT erpcrm._error(%s, ''{1}'', 400, ''X'', ''made up'', NULL, NULL, NULL)', :m)),
	(format('SELECT erpcrm._give_up(%s, ''{1}'', 0)', :m)),
	(format('SELECT erpcrm._failing_alone(%s, ''{1}'', '''')', :m)),
	(format('SELECT erpcrm._set_assoc_state(%s, ''{1}'', ''{x}'')', :m)),
	(format('SELECT erpcrm._archived_keys(%s, ''{1}'')', :m)),
	(format('SELECT erpcrm._links_done(%s, ''{1}'', ''{NULL}'', ''{2}'')', :m)),
	(format('SELECT erpcrm._searched_keys(%s, ''{1}'', 0)', :m)),
	(format('SELECT erpcrm._unclaim(%s, ''{1}'')', :m)),
	(format('SELECT erpcrm._refreshed(%s, 1000000)', :m)),
	('SELECT erpcrm._claim(-1, 10)');
GRANT SELECT ON dg.calls TO dg_other, dg_member;

-- another erpcrm_admin is refused every one of them (42501)
SET ROLE dg_other;
SELECT n, dg.try(call) AS answer FROM dg.calls ORDER BY n;
-- in full: why, and what to use instead
SELECT erpcrm._done(:m, '{1}', '{666}');
SELECT erpcrm._fold();
RESET ROLE;
-- nothing changed: the keys wait, with no HubSpot id, and nothing counted
SELECT s.erp_id, s.state, s.hubspot_id, s.error_message
  FROM erpcrm.sync_state s WHERE s.mapping_id = :m ORDER BY 1;
SELECT count(*) AS refreshes FROM erpcrm.fingerprint_stat WHERE mapping_id = :m;

-- not even through a SECURITY DEFINER function of that role a superuser calls
CREATE FUNCTION dg.sneak(integer) RETURNS bigint LANGUAGE sql SECURITY DEFINER
	AS $$ SELECT erpcrm._done($1, '{1}', '{666}') $$;
ALTER FUNCTION dg.sneak(integer) OWNER TO dg_other;
SELECT dg.sneak(:m);
DROP FUNCTION dg.sneak(integer);

-- a refresh is anyone's (of erpcrm_admin): it still records its count
SET ROLE dg_other;
SELECT erpcrm.refresh('dg_companies') AS dirtied;
RESET ROLE;
SELECT refresh_dirtied FROM erpcrm.fingerprint_stat WHERE mapping_id = :m;

-- the owner, and a role with its privileges, may deliver by hand
SET ROLE dg_owner;
SELECT erp_id, hubspot_id FROM erpcrm._claim(:m, 1) ORDER BY 1;
SELECT erpcrm._done(:m, '{1}', '{9001}') AS done;
SELECT * FROM erpcrm._archived_keys(:m, '{1}');
SELECT erpcrm._refreshed(:m, 0);
RESET ROLE;
SET ROLE dg_member;
SELECT count(*) AS claimed FROM erpcrm._claim(:m, 1);
SELECT erpcrm._error(:m, '{2}', 503, 'HTTP_ERROR', 'HubSpot answered 503', NULL, '1 hour', NULL) AS failed;
SELECT erpcrm._unclaim(:m, '{2}') AS unclaimed;
-- but not fold or recover, which are every mapping's
SELECT erpcrm._recover();
RESET ROLE;
-- and a superuser may do it all
SELECT erpcrm._recover() >= 0 AS recovered;
SELECT erpcrm._before_fold() >= 0 AS before_fold;
SELECT s.erp_id, s.state, s.hubspot_id
  FROM erpcrm.sync_state s WHERE s.mapping_id = :m ORDER BY 1;

SELECT erpcrm.unmap('dg_companies');
DROP SCHEMA dg CASCADE;
DROP ROLE dg_member;
DROP ROLE dg_owner;
DROP ROLE dg_other;
