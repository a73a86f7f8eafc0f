/* erpcrm--1.2--1.3.sql: layers, send only what changed, drift, the way back, reach */

\echo Use "ALTER EXTENSION erpcrm UPDATE TO '1.3'" to load this file. \quit

/*
 * Each part below belongs to one line of work; keep additions inside their
 * part so that parallel work merges cleanly.  Every object created or
 * changed here is also in the complete install script erpcrm--1.3.sql, and
 * the catalog test compares a fresh install with an upgraded one.
 */

-- ===================================================================
-- Part 1: layers (one step helper, one backoff formula)
-- ===================================================================

-- ===================================================================
-- Part 2: flat cost at scale (fewer row versions per key)
-- ===================================================================

-- ===================================================================
-- Part 3: fingerprints, refresh and erasure
-- ===================================================================

-- ===================================================================
-- Part 4: drift (reconcile)
-- ===================================================================

-- ===================================================================
-- Part 5: the way back (subscriptions and inbox)
-- ===================================================================

-- ===================================================================
-- Part 6: reach (many databases, native objects, API versions)
-- ===================================================================

-- ===================================================================
-- Part 7: packaging and catalog
-- ===================================================================

/*
 * _log_call without the time of the call was the worker's under 1.0 only;
 * the worker of 1.1 and later passes the time of each call.
 */
DROP FUNCTION erpcrm._log_call(text, text, integer, double precision, integer, text, text,
							   integer, interval);
