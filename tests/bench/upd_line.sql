-- pgbench: one invoice line updated per transaction (-D nlines=...)
\set id random(1, :nlines)
UPDATE bench.invoice_lines SET qty = qty + 1, amount = amount + 10.50
 WHERE id = :id;
