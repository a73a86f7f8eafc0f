-- pgbench: one invoice header updated per transaction (-D ninv=...)
\set id random(1, :ninv)
UPDATE bench.invoices SET status = 'paid', paid_on = current_date, gross = gross + 0.01
 WHERE id = :id;
