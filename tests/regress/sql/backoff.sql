-- The one retry formula, erpcrm._backoff() (C, worker/backoff.c): after the
-- n-th failure in a row, retry_base * 2^(n-1), at most retry_max, with
-- +-25% jitter.  The worker backs off with it as a whole, and
-- erpcrm._error() schedules the retry of single keys with it.
\set SHOW_CONTEXT never

-- 200 draws per attempt: each within +-25% of min(5 min, 1 s * 2^(n-1)),
-- and spread over that range (not a fixed factor)
WITH draws AS (
	SELECT n, extract(epoch FROM erpcrm._backoff('1 s', '5 min', n)) AS secs,
		   least(300, 2 ^ (n - 1)) AS nominal
	  FROM generate_series(1, 12) AS n, generate_series(1, 200) AS i)
SELECT n, nominal,
	   min(secs) >= 0.75 * nominal AND max(secs) <= 1.25 * nominal AS within_25_percent,
	   min(secs) < 0.80 * nominal AND max(secs) > 1.20 * nominal AS jittered
  FROM draws GROUP BY n, nominal ORDER BY n;

-- no overflow however many attempts; an attempt below 1 counts as the first
SELECT extract(epoch FROM erpcrm._backoff('1 s', '5 min', 1000000)) BETWEEN 225 AND 375 AS capped,
	   extract(epoch FROM erpcrm._backoff('1 s', '5 min', 0)) BETWEEN 0.75 AND 1.25 AS zero_is_first,
	   extract(epoch FROM erpcrm._backoff('1 s', '5 min', -3)) BETWEEN 0.75 AND 1.25 AS negative_is_first;

-- days count as 24 hours; NULL gives NULL
SELECT extract(epoch FROM erpcrm._backoff('1 day', '2 days', 2)) BETWEEN 129600 AND 216000 AS days,
	   erpcrm._backoff('1 s', NULL, 1) IS NULL AS strict;

-- erpcrm._error() retries keys after these delays: see state.sql
