-- tests/demo/data.sql: the sample ERP's data, for the schema of
-- examples/erp.sql (a Polish distributor of building and installation
-- materials).  Deterministic, apart from dates, which follow today's.
--
-- psql variables (tests/demo.sh sets them):
--   customers    how many customers have documents (plus two blocked ones)
--   products     how many products (up to 408)
--   invoices     how many invoices (with one to six lines each)
--   offers       how many offers made in the ERP
--   sales_deals  '{id,...}': HubSpot ids of deals sales made by hand, one
--                ERP order on each ('{}': none)
--
-- Customer 1, Alfa-Bud, and its buyer Katarzyna Wiśniewska are fixed: sales
-- typed them into HubSpot by hand before the ERP was connected (demo.sh
-- creates them in the mock with the same domain and e-mail address).
--
-- It is one ERP transaction: the worker wakes at its commit.
\set ON_ERROR_STOP 1
BEGIN;

CREATE SCHEMA erp_sample;

-- Polish letters to ASCII, for e-mail addresses and domains (lower() of
-- the C locale leaves Ł alone).
CREATE FUNCTION erp_sample.ascii(s text) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN lower(translate(s, 'ąćęłńóśźżĄĆĘŁŃÓŚŹŻ', 'acelnoszzacelnoszz'));

-- The i-th element of a list, round robin.
CREATE FUNCTION erp_sample.pick(a text[], i integer) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN a[1 + i % cardinality(a)];

-- A valid NIP (tax id): tax office prefix, six digits, check digit (weights
-- 6 5 7 2 3 4 5 6 7, sum mod 11, never 10), typed the way people type it:
-- 526-104-08-28, 526-10-40-828, 5261040828 or PL5261040828.  The mapping
-- view keeps the digits only.
CREATE FUNCTION erp_sample.nip(i integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
	w integer[] := '{6,5,7,2,3,4,5,6,7}';
	base text;
	s integer;
	d text;
BEGIN
	FOR attempt IN 0..9 LOOP
		base := erp_sample.pick('{526,527,521,113,701,779,676,894,583,851,954,631}', i)
			 || lpad(((i * 48271 + attempt * 7) % 1000000)::text, 6, '0');
		s := 0;
		FOR k IN 1..9 LOOP
			s := s + substr(base, k, 1)::integer * w[k];
		END LOOP;
		IF s % 11 < 10 THEN
			d := base || (s % 11)::text;
			RETURN CASE i % 4
				WHEN 0 THEN format('%s-%s-%s-%s', substr(d, 1, 3), substr(d, 4, 3), substr(d, 7, 2), substr(d, 9, 2))
				WHEN 1 THEN format('%s-%s-%s-%s', substr(d, 1, 3), substr(d, 4, 2), substr(d, 6, 2), substr(d, 8, 3))
				WHEN 2 THEN d
				ELSE 'PL' || d END;
		END IF;
	END LOOP;
	RAISE EXCEPTION 'no NIP for %', i;
END
$$;

CREATE FUNCTION erp_sample.first_name(i integer, female boolean) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN female
	THEN erp_sample.pick('{Anna,Maria,Katarzyna,Małgorzata,Agnieszka,Barbara,Ewa,Krystyna,Elżbieta,Magdalena,Joanna,Zofia,Aleksandra,Monika,Beata,Dorota}', i)
	ELSE erp_sample.pick('{Piotr,Krzysztof,Andrzej,Tomasz,Paweł,Jan,Michał,Marcin,Stanisław,Grzegorz,Józef,Łukasz,Adam,Zbigniew,Jerzy,Mateusz}', i)
END;

-- Surnames in the masculine form; -ski/-cki/-dzki become -ska/-cka/-dzka.
CREATE FUNCTION erp_sample.last_name(i integer, female boolean) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN CASE WHEN female
	THEN regexp_replace(erp_sample.pick('{Nowak,Kowalski,Wiśniewski,Wójcik,Kowalczyk,Kamiński,Lewandowski,Zieliński,Szymański,Woźniak,Dąbrowski,Kozłowski,Jankowski,Mazur,Kwiatkowski,Krawczyk,Piotrowski,Grabowski,Zając,Pawłowski,Michalski,Król,Wieczorek,Jabłoński}', i), '(sk|ck|dzk)i$', '\1a')
	ELSE erp_sample.pick('{Nowak,Kowalski,Wiśniewski,Wójcik,Kowalczyk,Kamiński,Lewandowski,Zieliński,Szymański,Woźniak,Dąbrowski,Kozłowski,Jankowski,Mazur,Kwiatkowski,Krawczyk,Piotrowski,Grabowski,Zając,Pawłowski,Michalski,Król,Wieczorek,Jabłoński}', i)
END;

-- A brand, unique for i < 156 (13 x 12 combinations).
CREATE FUNCTION erp_sample.brand(i integer) RETURNS text
LANGUAGE sql IMMUTABLE
RETURN erp_sample.pick('{Bud,Stal,Elektro,Termo,Hydro,Drew,Instal,Agro,Dach,Ceram,Euro,Mega,Kan}', i)
	|| erp_sample.pick('{-Mat,ex,-Pol,-Tech,max,-Serwis,plast,-Trans,-Hurt,-System,-Centrum,-Dom}', i / 13);

-- Customers 2..N (customer 1 is Alfa-Bud, below): every seventh is a sole
-- trader without a web domain; price levels A (20 %), B (40 %), C (40 %).
-- Credit limits follow the level.
CREATE PROCEDURE erp_sample.add_customers(first_id integer, last_id integer)
LANGUAGE sql
BEGIN ATOMIC
	INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit, active)
	SELECT i,
		   CASE WHEN i % 7 = 0
				THEN 'P.H.U. ' || erp_sample.brand(i) || ' ' || erp_sample.first_name(i, false)
					 || ' ' || erp_sample.last_name(i, false)
				ELSE erp_sample.brand(i) || ' '
					 || erp_sample.pick('{"sp. z o.o.",S.A.,sp.j.,"sp. z o.o. sp.k."}', i) END,
		   erp_sample.nip(i),
		   CASE WHEN i % 7 <> 0 THEN lower(erp_sample.brand(i)) || '.pl' END,
		   lvl,
		   CASE lvl WHEN 'A' THEN 100000 + (i % 5) * 25000
					WHEN 'B' THEN 30000 + (i % 4) * 10000
					ELSE 5000 + (i % 3) * 2500 END,
		   true
	  FROM generate_series(first_id, last_id) AS i,
		   LATERAL (SELECT CASE WHEN i % 10 < 2 THEN 'A' WHEN i % 10 < 6 THEN 'B' ELSE 'C' END) AS l(lvl);

	-- one contact person for a sole trader (the owner), two or three otherwise
	INSERT INTO erp.persons (id, customer_id, email, first_name, last_name, phone)
	SELECT c.id * 10 + k, c.id,
		   CASE WHEN c.domain IS NULL
				THEN erp_sample.ascii(fn) || '.' || erp_sample.ascii(ln) || '.' || c.id || '@wp.pl'
				ELSE erp_sample.ascii(fn) || '.' || erp_sample.ascii(ln) || '@' || c.domain END,
		   fn, ln,
		   format('+48 %s %s %s', 500 + (c.id * 10 + k) * 7 % 300,
				  lpad(((c.id * 10 + k) * 389 % 1000)::text, 3, '0'),
				  lpad(((c.id * 10 + k) * 701 % 1000)::text, 3, '0'))
	  FROM erp.customers c,
		   generate_series(1, 2 + c.id % 2) AS k,
		   LATERAL (SELECT (c.id + k) % 2 = 0 AND c.domain IS NOT NULL AS female) AS g,
		   LATERAL (SELECT CASE WHEN c.domain IS NULL THEN erp_sample.first_name(c.id, false)
								ELSE erp_sample.first_name(c.id * 3 + k, g.female) END AS fn,
						   CASE WHEN c.domain IS NULL THEN erp_sample.last_name(c.id, false)
								ELSE erp_sample.last_name(c.id * 7 + k * 5, g.female) END AS ln) AS n
	 WHERE c.id BETWEEN first_id AND last_id
	   AND (c.domain IS NOT NULL OR k = 1);
END;

-- Customer 1 and its two buyers.  Sales already have Alfa-Bud and Katarzyna
-- in HubSpot (typed by hand): erpcrm adopts them by domain and e-mail.
INSERT INTO erp.customers VALUES
	(1, 'Alfa-Bud sp. z o.o.', '526-104-08-28', 'alfa-bud.pl', 'A', 250000, true);
INSERT INTO erp.persons VALUES
	(11, 1, 'katarzyna.wisniewska@alfa-bud.pl', 'Katarzyna', 'Wiśniewska', '+48 601 100 200'),
	(12, 1, 'piotr.zielinski@alfa-bud.pl', 'Piotr', 'Zieliński', '+48 601 100 201');

CALL erp_sample.add_customers(2, :customers);

-- Two customers blocked years ago: no documents, not in HubSpot (the
-- companies view keeps active customers only).
INSERT INTO erp.customers (id, name, nip, domain, price_level, credit_limit, active)
VALUES (:customers + 1, 'Zbyt-Pol sp. z o.o. w likwidacji', erp_sample.nip(:customers + 1), 'zbyt-pol.pl', 'C', 0, false),
	   (:customers + 2, 'P.H.U. Kret Józef Mazur', erp_sample.nip(:customers + 2), NULL, 'C', 0, false);

-- Private buyers from the web shop: contacts without a company.
INSERT INTO erp.persons (id, customer_id, email, first_name, last_name, phone)
SELECT 90000 + i, NULL,
	   erp_sample.ascii(fn) || '.' || erp_sample.ascii(ln) || '.' || i || '@'
		   || erp_sample.pick('{gmail.com,wp.pl,onet.pl,o2.pl,interia.pl}', i),
	   fn, ln, format('+48 60%s %s %s', i % 10, lpad((i * 211 % 1000)::text, 3, '0'),
					  lpad((i * 577 % 1000)::text, 3, '0'))
  FROM generate_series(1, greatest(2, :customers / 15)) AS i,
	   LATERAL (SELECT erp_sample.first_name(i * 5, i % 2 = 0) AS fn,
					   erp_sample.last_name(i * 11, i % 2 = 0) AS ln) AS n;

-- Products: 68 articles from 13 categories, each from six producers; the
-- first N, taken across all categories.  Price levels A/B/C are 12, 7 and 3
-- per cent below the standard price; the cost is about 70 per cent of it.
-- Every 53rd is discontinued: not in HubSpot (the view keeps active ones).
INSERT INTO erp.products (sku, name, price, price_a, price_b, price_c, cost, active)
SELECT sku, name, price, round(price * 0.88, 2), round(price * 0.93, 2), round(price * 0.97, 2),
	   round(price * (0.64 + (k % 5) * 0.03), 2), k % 53 <> 0
  FROM (SELECT c.code || '-' || lpad((row_number() OVER (PARTITION BY c.code ORDER BY v.n, p.n))::text, 3, '0') AS sku,
			   format(c.pattern, v.variant) || ' – ' || p.producer AS name,
			   round(c.base * (1 + (v.n - 1) * 0.35) * (0.85 + p.n * 0.05), 2) AS price,
			   row_number() OVER (ORDER BY (v.n - 1) * 6 + p.n, c.code) AS k
		  FROM (VALUES
				('SRB', 'Śruba sześciokątna %s ocynkowana (100 szt.)', '{M6x30,M6x40,M8x40,M8x60,M10x50,M10x80,M12x60,M12x100}'::text[], 18.00),
				('WKR', 'Wkręt do drewna %s (200 szt.)', '{"3,5x30",4x40,4x50,5x60,5x80,6x100}', 19.90),
				('KOL', 'Kołek rozporowy nylonowy %s (50 szt.)', '{6x30,8x40,8x60,10x60,10x80,12x100}', 7.50),
				('KAB', 'Przewód YDYp 450/750 V %s (100 m)', '{"2x1,5","3x1,5","3x2,5","4x1,5","5x2,5",5x4}', 189.00),
				('RUR', 'Rura PEX-AL-PEX %s (zwój 100 m)', '{16x2,20x2,"25x2,5",32x3}', 310.00),
				('ZAW', 'Zawór kulowy mosiężny %s', '{"1/2\"","3/4\"","1\"","5/4\"","6/4\"","2\""}', 24.50),
				('FAR', 'Farba lateksowa %s 10 l', '{biała,kremowa,szara,beżowa,grafitowa,miętowa}', 129.00),
				('KLE', 'Klej do płytek %s 25 kg', '{C1T,C2T,C2TE,"C2TE S1","C2TE S2"}', 32.90),
				('CEM', 'Cement %s 25 kg', '{"CEM I 42,5R","CEM II/B-S 32,5R","CEM II/A-LL 42,5R"}', 23.50),
				('NAR', 'Wiertło do betonu SDS-plus %s', '{6x110,8x160,10x160,12x210,14x260,16x310}', 14.90),
				('IZO', 'Wełna mineralna %s (paczka)', '{"5 cm","10 cm","15 cm","20 cm"}', 89.00),
				('PLY', 'Płyta gipsowo-kartonowa %s 1200x2600', '{"12,5 mm GKB","12,5 mm GKBI","12,5 mm GKF","15 mm GKF"}', 28.40),
				('OSW', 'Oprawa LED hermetyczna %s', '{"18 W","36 W","50 W","100 W"}', 79.00)
			   ) AS c(code, pattern, variants, base),
			   unnest(c.variants) WITH ORDINALITY AS v(variant, n),
			   unnest('{Ferro,Bimet,Tech-Pol,Kers,Polbud,Inter-Mat}'::text[]) WITH ORDINALITY AS p(producer, n)) AS g
 WHERE k <= :products;

-- Orders.  Each deal sales made by hand gets the ERP order it turned into
-- (the order keeps the deal's HubSpot id); one order comes from the B2B
-- platform and becomes a deal of its own.  Totals are set below, from the
-- invoices.
INSERT INTO erp.orders (id, number, customer_id, ordered_on, status, total, source, hubspot_deal_id)
SELECT n, format('ZAM/%s/%s', n, to_char(current_date, 'YYYY')),
	   1 + ((ARRAY[1, 5, 8, 12, 21, 33, 44])[1 + (n - 1) % 7] - 1) % :customers,
	   current_date - 40 + n::integer * 3,
	   (ARRAY['partially_fulfilled', 'in_progress', 'fulfilled', 'awaiting_payment', 'delayed'])[1 + (n - 1) % 5],
	   0, 'sales', deal
  FROM unnest(:'sales_deals'::text[]) WITH ORDINALITY AS d(deal, n);
INSERT INTO erp.orders (id, number, customer_id, ordered_on, status, total, source)
VALUES (100, format('B2B/%s/0042', to_char(current_date, 'YYYY')), 3, current_date - 6, 'awaiting_payment', 0, 'b2b');

-- Invoices over the last four months, oldest first; payment terms follow
-- the price level (A 60 days, B 30, C 14).  Salespeople are HubSpot owner
-- ids; Alfa-Bud's invoices name none, so they take the owner sales gave the
-- company in HubSpot.
INSERT INTO erp.invoices (id, number, customer_id, issued_on, due_on, net, gross, salesperson)
SELECT i, format('FV/%s/%s', row_number() OVER (PARTITION BY date_trunc('month', issued) ORDER BY i),
				 to_char(issued, 'MM/YYYY')),
	   c.id, issued,
	   issued + CASE c.price_level WHEN 'A' THEN 60 WHEN 'B' THEN 30 ELSE 14 END,
	   0, 0,
	   CASE WHEN c.id = 1 THEN NULL
			ELSE (ARRAY['75000001', NULL, '75000003', NULL, '75000002'])[1 + i % 5] END
  FROM generate_series(1, :invoices) AS i,
	   LATERAL (SELECT current_date - (:invoices - i) * 120 / :invoices AS issued) AS d,
	   LATERAL (SELECT * FROM erp.customers
				 WHERE id = CASE WHEN i % 9 = 0 THEN 1 + i % 12		-- regulars buy more
								 ELSE 1 + (i * 7919) % :customers END) AS c;

-- What is sold: the active products, numbered; not the LED lights, new in
-- the range (nobody has bought one yet).
CREATE TABLE erp_sample.catalogue AS
SELECT row_number() OVER (ORDER BY sku) - 1 AS k, * FROM erp.products
 WHERE active AND sku NOT LIKE 'OSW-%';
CREATE UNIQUE INDEX ON erp_sample.catalogue (k);

-- One to six lines an invoice (3.5 on average), distinct products, the
-- customer's price level; every eleventh invoice has a 5 % discount on its
-- first line.
INSERT INTO erp.invoice_lines (invoice_id, line_no, sku, name, qty, unit_price, discount)
SELECT i.id, l, p.sku, p.name,
	   CASE WHEN p.price < 30 THEN 10 + (i.id * 7 + l * 13) % 90
			WHEN p.price < 300 THEN 1 + (i.id * 3 + l) % 24
			ELSE 1 + (i.id + l) % 6 END,
	   up.price,
	   CASE WHEN l = 1 AND i.id % 11 = 0 THEN round(up.price * 0.05, 2) ELSE 0 END
  FROM erp.invoices i
  JOIN erp.customers c ON c.id = i.customer_id
 CROSS JOIN generate_series(1, 1 + (i.id * 31 + i.id / 7) % 6) AS l
  JOIN erp_sample.catalogue p
	ON p.k = (i.id * 131 + l * 977) % (SELECT count(*) FROM erp_sample.catalogue),
	   LATERAL (SELECT CASE c.price_level WHEN 'A' THEN p.price_a WHEN 'B' THEN p.price_b
									   ELSE p.price_c END AS price) AS up;

UPDATE erp.invoices i
   SET net = t.net, gross = round(t.net * 1.23, 2)
  FROM (SELECT invoice_id, round(sum(qty * (unit_price - discount)), 2) AS net
		  FROM erp.invoice_lines GROUP BY invoice_id) t
 WHERE t.invoice_id = i.id;

-- Several invoices per order: the latest invoices of the order's customer
-- before today (two for a partially fulfilled order, three for a fulfilled
-- one, one otherwise).
UPDATE erp.invoices i SET order_id = o.id
  FROM erp.orders o
 WHERE i.id IN (SELECT x.id FROM erp.invoices x
				 WHERE x.customer_id = o.customer_id AND x.order_id IS NULL
				 ORDER BY x.id DESC
				 LIMIT CASE o.status WHEN 'fulfilled' THEN 3 WHEN 'partially_fulfilled' THEN 2
									 WHEN 'in_progress' THEN 0 ELSE 1 END);
UPDATE erp.orders o
   SET total = COALESCE((SELECT sum(gross) FROM erp.invoices WHERE order_id = o.id), 0)
			   + CASE WHEN o.status IN ('in_progress', 'partially_fulfilled', 'delayed') THEN 8000 + o.id * 1500 ELSE 0 END;

-- Payments.  Past their due date: 80 % paid, 10 % partly, 10 % not at all
-- (overdue).  Not yet due: 35 % paid early, 10 % partly, the rest open.  A
-- few large invoices are paid in two instalments.
INSERT INTO erp.payments (invoice_id, customer_id, amount, paid_on)
SELECT i.id, i.customer_id, amt, paid_on
  FROM erp.invoices i,
	   LATERAL (SELECT (i.id * 37) % 100 AS h, i.due_on < current_date AS due) AS s,
	   LATERAL (SELECT CASE WHEN (s.due AND s.h < 80) OR (NOT s.due AND s.h < 35) THEN 1.0
							WHEN (s.due AND s.h < 90) OR (NOT s.due AND s.h < 45) THEN 0.5
							ELSE 0 END AS share) AS p,
	   LATERAL (SELECT round(i.gross * p.share * 0.4, 2) AS amt,
					   least(i.issued_on + 7 + s.h % 20, current_date) AS paid_on
				 WHERE p.share = 1.0 AND i.gross > 20000
				UNION ALL
				SELECT i.gross * p.share - CASE WHEN p.share = 1.0 AND i.gross > 20000
												 THEN round(i.gross * p.share * 0.4, 2) ELSE 0 END,
					   least(i.issued_on + 9 + s.h % 30, current_date)
				 WHERE p.share > 0) AS pay(amt, paid_on);

-- Correction invoices: goods returned on every 97th invoice (a tenth of the
-- first line back, at least one unit), and invoice 50 corrected to zero
-- (every line cancelled).  A correction's lines say what the lines it
-- corrects are now; its net and gross are the differences.  It changes the
-- amounts and the line items of the invoice deal it corrects; it is no deal
-- of its own.
INSERT INTO erp.invoices (id, number, customer_id, corrects_id, issued_on, due_on, net, gross)
SELECT 100000 + row_number() OVER (ORDER BY i.id),
	   format('KOR/%s/%s', row_number() OVER (ORDER BY i.id), to_char(i.issued_on, 'YYYY')),
	   i.customer_id, i.id, least(i.issued_on + 5, current_date), least(i.issued_on + 5, current_date),
	   0, 0
  FROM erp.invoices i
 WHERE i.corrects_id IS NULL AND (i.id % 97 = 0 OR i.id = 50);
INSERT INTO erp.invoice_lines (invoice_id, line_no, sku, name, qty, unit_price, discount, corrects_invoice_id)
SELECT k.id, l.line_no, l.sku, l.name,
	   CASE WHEN k.corrects_id = 50 THEN 0 ELSE l.qty - greatest(1, floor(l.qty / 10)) END,
	   l.unit_price, l.discount, k.corrects_id
  FROM erp.invoices k
  JOIN erp.invoice_lines l ON l.invoice_id = k.corrects_id
 WHERE k.corrects_id IS NOT NULL AND (k.corrects_id = 50 OR l.line_no = 1);
UPDATE erp.invoices k SET net = t.net, gross = round(t.net * 1.23, 2)
  FROM (SELECT c.invoice_id, round(sum((c.qty - o.qty) * (c.unit_price - c.discount)), 2) AS net
		  FROM erp.invoice_lines c
		  JOIN erp.invoice_lines o ON o.invoice_id = c.corrects_invoice_id AND o.line_no = c.line_no
		 GROUP BY c.invoice_id) t
 WHERE k.id = t.invoice_id;

-- Offers made in the ERP, with individual prices (the customer's level,
-- minus 3 to 8 per cent): open, accepted or rejected.
INSERT INTO erp.offers (id, number, customer_id, valid_until, status)
SELECT n, format('OF/%s/%s', n, to_char(current_date, 'YYYY')),
	   1 + (n * 37) % :customers, current_date + 45 - (n * 7) % 75,
	   CASE WHEN n % 5 = 0 THEN 'accepted' WHEN n % 7 = 0 THEN 'rejected' ELSE 'open' END
  FROM generate_series(1, :offers) AS n;
INSERT INTO erp.offer_lines (offer_id, line_no, sku, qty, unit_price)
SELECT f.id, l, p.sku,
	   CASE WHEN p.price < 30 THEN 50 * (1 + (f.id + l) % 8) ELSE 2 + (f.id * l) % 30 END,
	   round(CASE c.price_level WHEN 'A' THEN p.price_a WHEN 'B' THEN p.price_b ELSE p.price_c END
			 * (0.92 + ((f.id + l) % 6) * 0.01), 2)
  FROM erp.offers f
  JOIN erp.customers c ON c.id = f.customer_id
 CROSS JOIN generate_series(1, 2 + f.id % 5) AS l
  JOIN erp_sample.catalogue p
	ON p.k = (f.id * 53 + l * 211) % (SELECT count(*) FROM erp_sample.catalogue);

COMMIT;
