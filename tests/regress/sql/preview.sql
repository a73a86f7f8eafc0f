-- erpcrm.preview(): the requests the worker would send for one key
\set SHOW_CONTEXT never
CREATE SCHEMA pv;
CREATE TABLE pv.firms (id int PRIMARY KEY, name text, domain text);
CREATE TABLE pv.people (id int PRIMARY KEY, email text, firm int, born date, score numeric);
CREATE VIEW pv.hs_firms AS SELECT id AS erp_id, name, domain FROM pv.firms;
CREATE VIEW pv.hs_people AS
SELECT id AS erp_id, email, firm AS company, born AS date_of_birth, 10 / score AS rating
  FROM pv.people;
INSERT INTO pv.firms VALUES (1, 'Acme', 'acme.example'), (2, 'Globex', 'globex.example');
INSERT INTO pv.people VALUES (10, 'ann@acme.example', 1, '1980-02-03', 4),
	(11, 'bob@globex.example', 2, NULL, 8), (12, 'cy@acme.example', 1, 'infinity', 1),
	(13, 'dee@acme.example', NULL, NULL, 0), (14, 'eve@globex.example', 3, NULL, 2);

-- a mapping defined paused: nothing is delivered until resume()
BEGIN;
SELECT erpcrm.map('pv_firms', 'pv.hs_firms', 'companies') > 0 AS firms;
SELECT erpcrm.map('pv_people', 'pv.hs_people', 'contacts') > 0 AS people;
SELECT erpcrm.associate('pv_people', 'company', 'pv_firms');
SELECT erpcrm.pause('pv_firms');
SELECT erpcrm.pause('pv_people');
COMMIT;
SELECT mapping, paused FROM erpcrm.status WHERE mapping LIKE 'pv\_%' ORDER BY 1;

-- a company not in HubSpot yet: the upsert, exactly
SELECT step, method, path, body, note FROM erpcrm.preview('pv_firms', '1');
-- a contact whose company is not in HubSpot yet: what it waits for
SELECT step, method, path, body, note FROM erpcrm.preview('pv_people', '10');

-- once the company is in HubSpot (as if delivered), the contact's requests
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id)
SELECT mapping_id, '1', 'synced', '9001' FROM erpcrm.mapping WHERE name = 'pv_firms';
SELECT step, method, path, body, note FROM erpcrm.preview('pv_people', '10');
-- a contact without a company, NULL values as empty strings
SELECT note FROM erpcrm.preview('pv_people', '11');
UPDATE pv.people SET firm = NULL WHERE id = 11;
SELECT step, method, path, body FROM erpcrm.preview('pv_people', '11');
-- a contact known to HubSpot, moved to another company: old link removed
INSERT INTO erpcrm.sync_state (mapping_id, erp_id, state, hubspot_id, assoc_state)
SELECT mapping_id, '10', 'synced', '7001', 'company=9002' FROM erpcrm.mapping WHERE name = 'pv_people';
SELECT step, method, path, body FROM erpcrm.preview('pv_people', '10');
-- nothing was sent, nothing changed
SELECT m.name, s.erp_id, s.state, s.hubspot_id, s.attempts
  FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id)
 WHERE m.name LIKE 'pv\_%' ORDER BY 1, 2;

-- errors
SELECT * FROM erpcrm.preview('pv_nobody', '1');
SELECT * FROM erpcrm.preview('pv_people', '99');
SELECT * FROM erpcrm.preview('pv_people', NULL);
-- a value HubSpot cannot hold
SELECT * FROM erpcrm.preview('pv_people', '12');
-- a row the view cannot compute (division by zero)
SELECT * FROM erpcrm.preview('pv_people', '13');
-- a company that is in no view: the contact is sent without the link
SELECT step, method, path FROM erpcrm.preview('pv_people', '14');

-- the view is read as the mapping's owner, never as the caller
CREATE ROLE pv_owner;
CREATE ROLE pv_dba IN ROLE erpcrm_admin;
GRANT USAGE ON SCHEMA pv TO pv_owner;
GRANT SELECT ON pv.hs_firms TO pv_owner;
CREATE FUNCTION pv.whoami() RETURNS text LANGUAGE sql STABLE AS 'SELECT current_user::text';
CREATE VIEW pv.hs_who AS SELECT id AS erp_id, pv.whoami() AS description FROM pv.firms;
ALTER VIEW pv.hs_who OWNER TO pv_owner;
GRANT SELECT ON pv.firms TO pv_owner;
GRANT EXECUTE ON FUNCTION pv.whoami() TO pv_owner;
SELECT erpcrm.map('pv_who', 'pv.hs_who', 'companies') > 0 AS who;
SELECT erpcrm.pause('pv_who');
UPDATE erpcrm.mapping SET owner = 'pv_owner'::regrole WHERE name = 'pv_who';
-- (preview() asks for SELECT on the view, as map() does: red)
GRANT SELECT ON pv.hs_who TO pv_dba;
SET ROLE pv_dba;
SELECT body->'inputs'->0->'properties'->>'description' AS read_as FROM erpcrm.preview('pv_who', '1');
-- a plain user may not preview
RESET ROLE;
CREATE ROLE pv_nobody;
SET ROLE pv_nobody;
SELECT * FROM erpcrm.preview('pv_who', '1');
RESET ROLE;

-- clean up
SELECT erpcrm.unmap('pv_who');
SELECT erpcrm.unmap('pv_people');
SELECT erpcrm.unmap('pv_firms');
DROP SCHEMA pv CASCADE;
DROP ROLE pv_owner;
DROP ROLE pv_dba;
DROP ROLE pv_nobody;
