-- tests/demo/burst.sql: a busy morning in the ERP.  Every statement is its
-- own transaction, as the ERP's users would commit them.

-- Eight new customers with their contact persons (one transaction).
CALL erp_sample.add_customers(81, 88);

-- The new price list: cables +7.5 %, cement +4 %.
UPDATE erp.products SET price = round(price * 1.075, 2) WHERE category = 'Kable';
UPDATE erp.products SET price = round(price * 1.04, 2) WHERE category = 'Materiały sypkie';

-- Sales review: twelve customers move up a price level, with a higher credit limit.
UPDATE erp.customers
   SET price_level = CASE price_level WHEN 'C' THEN 'B' ELSE 'A' END,
	   credit_limit = credit_limit * 1.5
 WHERE id IN (2, 3, 6, 9, 12, 16, 19, 23, 27, 33, 41, 45);

-- Orders coming in: thirty small transactions, each touching its customer
-- (several hit the same customer: the outbox coalesces them).
SELECT format('UPDATE erp.customers SET last_order_at = date_trunc(''second'', now()) WHERE id = %s',
			  1 + (n * 17) % 40)
  FROM generate_series(1, 30) AS n \gexec

-- People: a buyer moves to another customer, two new phone numbers.
UPDATE erp.persons
   SET customer_id = 15,
	   email = split_part(email, '@', 1) || '@' || (SELECT domain FROM erp.customers WHERE id = 15)
 WHERE id = 21;
UPDATE erp.persons SET phone = '+48 601 222 333' WHERE id = 42;
UPDATE erp.persons SET phone = '+48 512 000 777', jobtitle = 'Dyrektor handlowy' WHERE id = 52;

-- A new product line: photovoltaics.
INSERT INTO erp.products (sku, name, price, category) VALUES
	('PV-001', 'Panel fotowoltaiczny 430 W monokrystaliczny', 389.00, 'Fotowoltaika'),
	('PV-002', 'Falownik sieciowy 10 kW trójfazowy', 5890.00, 'Fotowoltaika'),
	('PV-003', 'Magazyn energii 10 kWh LiFePO4', 17490.00, 'Fotowoltaika'),
	('PV-004', 'Konstrukcja dachowa do 10 paneli', 1290.00, 'Fotowoltaika'),
	('PV-005', 'Przewód solarny 6 mm² (100 m)', 459.00, 'Fotowoltaika');

-- Clean-up: a discontinued product is deleted, a customer is blocked for
-- unpaid invoices, a web-shop buyer asks to be forgotten by the ERP.
DELETE FROM erp.products WHERE sku = 'WKR-030';
UPDATE erp.customers SET active = false WHERE id = 11;
DELETE FROM erp.persons WHERE id = 9003;
