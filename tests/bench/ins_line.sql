-- pgbench: one invoice line per transaction (-D ninv=...)
\set inv random(1, :ninv)
INSERT INTO bench.invoice_lines (invoice_id, line_no, sku, qty, price, vat_rate, amount)
VALUES (:inv, 6, 'SKU-' || (:inv % 1000), 2, 10.50, 23, 21.00);
