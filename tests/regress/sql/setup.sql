-- Installing erpcrm: schema, roles, nothing for PUBLIC
\set SHOW_CONTEXT never
CREATE EXTENSION erpcrm;
SELECT extname, extversion, extnamespace::regnamespace FROM pg_extension WHERE extname = 'erpcrm';
SELECT rolname FROM pg_roles WHERE rolname LIKE 'erpcrm%' ORDER BY 1;

-- no function, table or view of erpcrm is open to PUBLIC
SELECT p.oid::regprocedure AS public_function
  FROM pg_proc p
 WHERE p.pronamespace = 'erpcrm'::regnamespace
   AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
   -- but the trigger function, which cannot be called, for partitions (red)
   AND p.oid <> 'erpcrm.capture()'::regprocedure;
SELECT c.oid::regclass AS public_relation
  FROM pg_class c
 WHERE c.relnamespace = 'erpcrm'::regnamespace AND c.relkind IN ('r', 'v', 'S')
   AND (c.relacl IS NULL OR EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0));
SELECT has_schema_privilege('public', 'erpcrm', 'USAGE') AS public_has_usage;

-- every SECURITY DEFINER function pins its search_path
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p
 WHERE p.pronamespace = 'erpcrm'::regnamespace AND p.prosecdef
   AND NOT coalesce(p.proconfig @> '{"search_path=pg_catalog, pg_temp"}', false);

-- the worker is registered (no token, so it says it is not configured)
SELECT state IN ('not configured', 'idle', 'starting') AS worker_known FROM erpcrm.worker;

-- the token is never shown
SHOW erpcrm.token;
SELECT count(*) FROM pg_settings WHERE name = 'erpcrm.token' AND setting NOT IN ('', '(set)');

-- bad settings are refused with a reason
ALTER SYSTEM SET erpcrm.hubspot_url = 'ftp://example.com';
ALTER SYSTEM SET erpcrm.hubspot_url = 'https://api.hubapi.com/';
ALTER SYSTEM SET erpcrm.batch_size = 101;
ALTER SYSTEM SET erpcrm.unknown_setting = 1;

-- A small ERP used by the following suites.  Not the TAP suites' ERP
-- (tests/erp.sql): its keys are of other types (a bigint, a uuid, a composite
-- one), and its tables are part of what these suites print.
CREATE SCHEMA erp;
CREATE TABLE erp.customers (
	id integer PRIMARY KEY,
	name text NOT NULL,
	nip text,
	active boolean NOT NULL DEFAULT true
);
CREATE TABLE erp.persons (
	id bigint PRIMARY KEY,
	customer_id integer REFERENCES erp.customers,
	email text,
	first_name text,
	last_name text
);
CREATE TABLE erp.products (
	sku text PRIMARY KEY,
	name text NOT NULL,
	price numeric(12,2),
	active boolean NOT NULL DEFAULT true
);
CREATE TABLE erp.invoices (
	id uuid PRIMARY KEY,
	number text NOT NULL,
	customer_id integer REFERENCES erp.customers,
	issued date NOT NULL DEFAULT '2026-01-15'
);
CREATE TABLE erp.invoice_lines (
	invoice_id uuid REFERENCES erp.invoices,
	line_no integer,
	sku text,
	qty numeric,
	PRIMARY KEY (invoice_id, line_no)
);

CREATE VIEW erp.hs_companies AS
SELECT id AS erp_id, name, nip FROM erp.customers WHERE active;
CREATE VIEW erp.hs_contacts AS
SELECT id::text AS erp_id, email, first_name AS firstname, last_name AS lastname,
	   customer_id::text AS company_erp_id
  FROM erp.persons;
CREATE VIEW erp.hs_products AS
SELECT sku AS erp_id, name, price, sku AS hs_sku FROM erp.products WHERE active;
CREATE VIEW erp.hs_invoices AS
SELECT i.id AS erp_id, i.number AS dealname, i.issued AS closedate,
	   (SELECT sum(l.qty) FROM erp.invoice_lines l WHERE l.invoice_id = i.id) AS amount,
	   i.customer_id::text AS company_erp_id
  FROM erp.invoices i;
CREATE VIEW erp.hs_lines AS
SELECT invoice_id::text || '/' || line_no AS erp_id, sku AS name, qty AS quantity
  FROM erp.invoice_lines;
