-- The ERP side of the delivery benchmarks (psql -v ncompanies=N), in the
-- database the worker serves: customers behind a companies mapping view,
-- and a table of companies whose rows carry their commit time (latency).
CREATE EXTENSION erpcrm;
CREATE SCHEMA bench;

CREATE TABLE bench.customers (
	id				integer PRIMARY KEY,
	name			text NOT NULL,
	nip				text,
	domain			text,
	price_level		char(1),
	credit_limit	numeric(12,2),
	customer_since	date,
	vip				boolean,
	active			boolean NOT NULL DEFAULT true
);
INSERT INTO bench.customers
SELECT i, 'Customer ' || i || ' sp. z o.o.', lpad((5260000000 + i)::text, 10, '0'),
	   'customer' || i || '.example.pl', chr(65 + i % 3), 1000 + i % 50000,
	   date '2015-01-01' + i % 3000, i % 10 = 0, true
  FROM generate_series(1, :ncompanies) i;
CREATE VIEW bench.hs_companies AS
SELECT id AS erp_id, name, nip, domain, price_level, credit_limit, customer_since, vip
  FROM bench.customers WHERE active;

CREATE TABLE bench.lat_customers (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	domain			text,
	committed_at	timestamptz NOT NULL
);
CREATE VIEW bench.hs_latency AS
SELECT id AS erp_id, name, domain FROM bench.lat_customers;
