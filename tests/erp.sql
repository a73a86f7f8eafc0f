-- The sample ERP of the README's worked example: its tables only.  The TAP
-- suites (ErpcrmTest::load_erp, which adds the mapping views erp.hs_*) and
-- the README test (t/009_readme.pl, where the README adds crm.hs_*) load
-- this file.  The pg_regress suites have their own, smaller ERP in
-- tests/regress/sql/setup.sql, whose output they print.
CREATE SCHEMA erp;
CREATE TABLE erp.customers (
	id integer PRIMARY KEY,
	name text NOT NULL,
	nip text,
	domain text,
	price_level char(1),
	credit_limit numeric(12,2),
	customer_since date,
	last_order_at timestamptz,
	vip boolean,
	active boolean NOT NULL DEFAULT true
);
CREATE TABLE erp.persons (
	id integer PRIMARY KEY,
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
