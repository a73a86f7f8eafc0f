/*-------------------------------------------------------------------------
 *
 * backoff.c
 *	  The one retry formula of erpcrm.  After the n-th failure in a row,
 *	  wait
 *
 *		min(retry_max, retry_base * 2^(n-1)) * (0.75 + 0.5 * random())
 *
 *	  that is retry_base first, doubling with each attempt up to retry_max,
 *	  with +-25% jitter so that retries spread out.  The worker backs off
 *	  with it as a whole (HubSpot failing, a failed cycle), and
 *	  erpcrm._error() (SQL) schedules the retry of single keys with it,
 *	  through erpcrm._backoff().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/pg_prng.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/timestamp.h"

#include "backoff.h"

/* Beyond 2^30 times the base, every delay is retry_max anyway. */
#define ERPCRM_BACKOFF_MAX_DOUBLINGS	30

/* The delay, in milliseconds, after the attempt-th failure in a row. */
double
erpcrm_backoff_ms(double base_ms, double max_ms, int attempt)
{
	double		delay;

	attempt = Max(attempt, 1);
	delay = base_ms * ldexp(1.0, Min(attempt - 1, ERPCRM_BACKOFF_MAX_DOUBLINGS));
	delay = Min(delay, max_ms);
	return delay * (0.75 + 0.5 * pg_prng_double(&pg_global_prng_state));
}

static double
interval_ms(const Interval *span)
{
	return span->time / 1000.0 +
		((double) span->month * DAYS_PER_MONTH + span->day) * SECS_PER_DAY * 1000.0;
}

/*
 * erpcrm._backoff(retry_base interval, retry_max interval, attempt integer)
 *	 returns interval
 */
PG_FUNCTION_INFO_V1(erpcrm_backoff_v1);
Datum
erpcrm_backoff_v1(PG_FUNCTION_ARGS)
{
	Interval   *base = PG_GETARG_INTERVAL_P(0);
	Interval   *max = PG_GETARG_INTERVAL_P(1);
	int32		attempt = PG_GETARG_INT32(2);
	Interval   *result = palloc0(sizeof(Interval));

	result->time = (TimeOffset) rint(erpcrm_backoff_ms(interval_ms(base),
													   interval_ms(max),
													   attempt) * 1000.0);
	PG_RETURN_INTERVAL_P(result);
}
