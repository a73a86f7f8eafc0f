-- tests/demo/burst.sql: the next business day in the ERP, for the schema of
-- examples/erp.sql.  Every statement (or BEGIN ... COMMIT block) is its own
-- transaction, as the ERP's users would commit them.  It works at any size
-- of tests/demo/data.sql.
\set ON_ERROR_STOP 1

-- A new customer with two buyers, and its first invoice, in one transaction:
-- erpcrm sends the company first, then the contacts and the deal.
BEGIN;
INSERT INTO erp.customers VALUES
	(900, 'Ceramika Nowak sp. z o.o.', '779-236-41-28', 'ceramika-nowak.pl', 'B', 40000, true);
INSERT INTO erp.persons VALUES
	(9001, 900, 'ewa.nowak@ceramika-nowak.pl', 'Ewa', 'Nowak', '+48 602 330 101'),
	(9002, 900, 'jan.nowak@ceramika-nowak.pl', 'Jan', 'Nowak', '+48 602 330 102');
INSERT INTO erp.invoices (id, number, customer_id, issued_on, due_on, net, gross, salesperson)
VALUES (10000, 'FV/D/1', 900, current_date, current_date + 30, 0, 0, '75000003');
INSERT INTO erp.invoice_lines
SELECT 10000, l, sku, name, 10 * l, price_b, 0
  FROM erp_sample.catalogue, generate_series(1, 3) AS l
 WHERE k = l * 17 % (SELECT count(*) FROM erp_sample.catalogue);
UPDATE erp.invoices SET net = t.net, gross = round(t.net * 1.23, 2)
  FROM (SELECT sum(qty * unit_price) AS net FROM erp.invoice_lines WHERE invoice_id = 10000) t
 WHERE id = 10000;
COMMIT;

-- The morning's invoicing run: twenty invoices with their lines, the first
-- for Alfa-Bud's partially fulfilled order (when sales have that deal).
BEGIN;
INSERT INTO erp.invoices (id, number, customer_id, order_id, issued_on, due_on, net, gross, salesperson)
SELECT 10000 + n, 'FV/D/' || (n + 1), c.id, o.id, current_date,
	   current_date + CASE c.price_level WHEN 'A' THEN 60 WHEN 'B' THEN 30 ELSE 14 END,
	   0, 0, CASE WHEN c.id <> 1 THEN (ARRAY['75000001', '75000002', NULL])[1 + n % 3] END
  FROM generate_series(1, 20) AS n
  JOIN erp.customers c ON c.id = CASE n WHEN 1 THEN 1 ELSE 1 + (n * 13) % (SELECT count(*) FROM erp.customers WHERE active AND id < 900) END
  LEFT JOIN erp.orders o ON n = 1 AND o.id = 1 AND o.customer_id = c.id;
INSERT INTO erp.invoice_lines
SELECT i.id, l, p.sku, p.name, 1 + (i.id + l) % 9,
	   CASE c.price_level WHEN 'A' THEN p.price_a WHEN 'B' THEN p.price_b ELSE p.price_c END, 0
  FROM erp.invoices i
  JOIN erp.customers c ON c.id = i.customer_id
 CROSS JOIN generate_series(1, 1 + i.id % 4) AS l
  JOIN erp_sample.catalogue p ON p.k = (i.id * 7 + l * 31) % (SELECT count(*) FROM erp_sample.catalogue)
 WHERE i.id BETWEEN 10001 AND 10020;
UPDATE erp.invoices i SET net = t.net, gross = round(t.net * 1.23, 2)
  FROM (SELECT invoice_id, sum(qty * unit_price) AS net FROM erp.invoice_lines
		 WHERE invoice_id BETWEEN 10001 AND 10020 GROUP BY invoice_id) t
 WHERE i.id = t.invoice_id;
COMMIT;

-- Second thoughts on an invoice before it is printed: a line removed,
-- a quantity changed.
DELETE FROM erp.invoice_lines WHERE invoice_id = 10019 AND line_no = 4;
UPDATE erp.invoice_lines SET qty = qty + 5 WHERE invoice_id = 10019 AND line_no = 1;
UPDATE erp.invoices i SET net = t.net, gross = round(t.net * 1.23, 2)
  FROM (SELECT sum(qty * unit_price) AS net FROM erp.invoice_lines WHERE invoice_id = 10019) t
 WHERE i.id = 10019;

-- The bank statement: the forty oldest open invoices are paid in full.
INSERT INTO erp.payments (invoice_id, customer_id, amount, paid_on)
SELECT i.id, i.customer_id, i.gross - COALESCE(p.paid, 0), current_date
  FROM erp.invoices i
  LEFT JOIN LATERAL (SELECT sum(amount) AS paid FROM erp.payments WHERE invoice_id = i.id) p ON true
 WHERE i.corrects_id IS NULL AND i.id < 10000 AND COALESCE(p.paid, 0) < i.gross
   AND NOT EXISTS (SELECT FROM erp.invoices k WHERE k.corrects_id = i.id)
 ORDER BY i.issued_on, i.id
 LIMIT 40;

-- Alfa-Bud returns goods from its latest invoice: a correction invoice.  Its
-- line gives the first line's corrected quantity (a quarter back, at least
-- one unit); its net and gross are the differences.
BEGIN;
INSERT INTO erp.invoices (id, number, customer_id, corrects_id, issued_on, due_on, net, gross)
SELECT 100900, 'KOR/D/1', i.customer_id, i.id, current_date, current_date, 0, 0
  FROM erp.invoices i
 WHERE i.id = (SELECT max(id) FROM erp.invoices WHERE customer_id = 1 AND id < 10000 AND corrects_id IS NULL);
UPDATE erp.invoices k SET net = t.net, gross = round(t.net * 1.23, 2)
  FROM (SELECT round(-greatest(1, ceil(v.quantity / 4)) * (v.price - v.discount), 2) AS net
		  FROM erp.hs_invoice_lines v
		 WHERE v.invoice_erp_id = 'FV-' || (SELECT corrects_id FROM erp.invoices WHERE id = 100900)
		 ORDER BY v.hs_position_on_quote
		 LIMIT 1) t
 WHERE k.id = 100900;
INSERT INTO erp.invoice_lines (invoice_id, line_no, sku, name, qty, unit_price, discount, corrects_invoice_id)
SELECT 100900, v.hs_position_on_quote, v.product_erp_id, v.name,
	   v.quantity - greatest(1, ceil(v.quantity / 4)), v.price, v.discount, k.corrects_id
  FROM erp.invoices k
  JOIN erp.hs_invoice_lines v ON v.invoice_erp_id = 'FV-' || k.corrects_id
 WHERE k.id = 100900
 ORDER BY v.hs_position_on_quote
 LIMIT 1;
COMMIT;

-- Orders: the partially fulfilled one is now fulfilled; the B2B order is
-- paid and fulfilled (its deal moves to Closed Won).
UPDATE erp.orders SET status = 'fulfilled' WHERE id = 1;
UPDATE erp.orders SET status = 'delayed' WHERE id = 2;
INSERT INTO erp.payments (invoice_id, customer_id, amount, paid_on)
SELECT i.id, i.customer_id, i.gross, current_date FROM erp.invoices i
 WHERE i.order_id = 100
   AND NOT EXISTS (SELECT FROM erp.payments p WHERE p.invoice_id = i.id);
UPDATE erp.orders SET status = 'fulfilled' WHERE id = 100;

-- The new price list: cables 7.5 % dearer, at every price level.
UPDATE erp.products
   SET price = round(price * 1.075, 2), price_a = round(price_a * 1.075, 2),
	   price_b = round(price_b * 1.075, 2), price_c = round(price_c * 1.075, 2)
 WHERE sku LIKE 'KAB-%' AND active;

-- A product nobody bought is discontinued (archived in HubSpot); two new
-- ones arrive.
UPDATE erp.products SET active = false
 WHERE sku = (SELECT sku FROM erp.products p
			   WHERE active
				 AND NOT EXISTS (SELECT FROM erp.invoice_lines l WHERE l.sku = p.sku)
				 AND NOT EXISTS (SELECT FROM erp.offer_lines l WHERE l.sku = p.sku)
			   ORDER BY sku DESC LIMIT 1);
INSERT INTO erp.products VALUES
	('PV-001', 'Panel fotowoltaiczny 430 W monokrystaliczny', 389.00, 342.32, 361.77, 377.33, 281.00, true),
	('PV-002', 'Falownik sieciowy 10 kW trójfazowy', 5890.00, 5183.20, 5477.70, 5713.30, 4410.00, true);

-- Sales review: five customers get a higher credit limit.
UPDATE erp.customers SET credit_limit = credit_limit * 1.5 WHERE id IN (2, 3, 6, 9, 12);

-- Offers: one accepted, one rejected, a new one for the new customer.
UPDATE erp.offers SET status = 'accepted' WHERE id = 1;
UPDATE erp.offers SET status = 'rejected' WHERE id = 2;
BEGIN;
INSERT INTO erp.offers VALUES (1000, 'OF/D/1', 900, current_date + 30, 'open');
INSERT INTO erp.offer_lines
SELECT 1000, l, sku, 100, round(price_b * 0.95, 2)
  FROM erp_sample.catalogue, generate_series(1, 4) AS l
 WHERE k = l * 23 % (SELECT count(*) FROM erp_sample.catalogue);
COMMIT;

-- People: a new phone number; a buyer leaves Alfa-Bud (the ERP forgets
-- him; HubSpot keeps the contact: the contacts mapping says keep).
UPDATE erp.persons SET phone = '+48 601 999 000' WHERE id = 11;
DELETE FROM erp.persons WHERE id = 12;
