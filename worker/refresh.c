/*-------------------------------------------------------------------------
 *
 * refresh.c
 *	  The worker's refresh of mappings that have refresh_every (1.3): the
 *	  same steps as erpcrm.refresh(), each in a transaction of its own, a
 *	  few steps per cycle of the worker so that delivery goes on meanwhile.
 *	  A step reads at most ERPCRM_REFRESH_STEP keys of the view, so the
 *	  locks it takes on ERP tables are held for a moment only.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "activity.h"
#include "kept.h"
#include "erpcrm.h"
#include "refresh.h"

#define ERPCRM_REFRESH_STEP 500		/* keys per step (transaction) */
#define ERPCRM_REFRESH_STEPS 10		/* steps per cycle of the worker */

/* The refresh under way: mapping (0: none), last key done, keys dirtied. */
static int32 refresh_mapping = 0;
static char *refresh_after = NULL;
static int64 refresh_dirtied = 0;
static bool refresh_in_step = false;	/* an ERROR left a step unfinished */

static void
forget_refresh(void)
{
	refresh_mapping = 0;
	refresh_dirtied = 0;
	if (refresh_after)
		pfree(refresh_after);
	refresh_after = NULL;
}

/* The refresh of the mapping ended (or was given up): say so in SQL. */
static void
record_refreshed(void)
{
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		args[2];

	args[0] = Int32GetDatum(refresh_mapping);
	args[1] = Int64GetDatum(refresh_dirtied);
	if (erpcrm_execute_kept("SELECT erpcrm._refreshed($1, $2)", 2, types, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._refreshed failed");
	forget_refresh();
}

static void
wake_if(int64 dirtied)
{
	if (dirtied > 0 && erpcrm_run_kept("SELECT erpcrm._wake()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._wake() failed");
}

/*
 * One step: start the refresh that is due (keys new to the view), or look
 * at the next keys of the one under way.  Returns false when there is
 * nothing (more) to do now.
 */
static bool
refresh_step(void)
{
	bool		more = true;
	bool		isnull;

	erpcrm_begin_step("erpcrm: refreshing a mapping");
	refresh_in_step = true;
	if (refresh_mapping == 0)
	{
		Datum		d;

		if (erpcrm_run_kept("SELECT pg_catalog.to_regprocedure('erpcrm._refresh_due()') IS NOT NULL",
						true, 1) != SPI_OK_SELECT ||
			!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			more = false;		/* SQL older than 1.3 */
		else if (erpcrm_run_kept("SELECT erpcrm._refresh_due()", true, 1) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._refresh_due() failed");
		else
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (isnull)
				more = false;
			else
			{
				Oid			types[1] = {INT4OID};
				Datum		args[1];

				refresh_mapping = DatumGetInt32(d);
				args[0] = d;
				if (erpcrm_execute_kept("SELECT erpcrm._refresh_joined($1)", 1, types, args,
										  NULL, false, 1) != SPI_OK_SELECT)
					elog(ERROR, "erpcrm._refresh_joined failed");
				refresh_dirtied = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc, 1, &isnull));
				wake_if(refresh_dirtied);
			}
		}
	}
	else
	{
		Oid			types[3] = {INT4OID, TEXTOID, INT4OID};
		Datum		args[3];
		char		nulls[3] = {' ', refresh_after ? ' ' : 'n', ' '};
		char	   *last;
		int64		dirtied;

		args[0] = Int32GetDatum(refresh_mapping);
		args[1] = refresh_after ? CStringGetTextDatum(refresh_after) : (Datum) 0;
		args[2] = Int32GetDatum(ERPCRM_REFRESH_STEP);
		if (erpcrm_execute_kept("SELECT last_key, dirtied FROM erpcrm._refresh_step($1, $2, $3)",
								  3, types, args, nulls, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "erpcrm._refresh_step failed");
		last = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		dirtied = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (isnull)
			dirtied = 0;
		refresh_dirtied += dirtied;
		wake_if(dirtied);
		if (last == NULL)
		{
			record_refreshed();
			more = false;
		}
		else
		{
			if (refresh_after)
				pfree(refresh_after);
			refresh_after = MemoryContextStrdup(TopMemoryContext, last);
		}
	}
	refresh_in_step = false;
	erpcrm_end_step();
	return more;
}

void
erpcrm_refresh_some(void)
{
	/*
	 * A step that raised an ERROR (a view that cannot be read, say): this
	 * refresh is given up, and tried again after refresh_every, so that the
	 * worker does not fail on it every cycle.  The ERROR is in the log.
	 */
	if (refresh_in_step)
	{
		refresh_in_step = false;
		if (refresh_mapping != 0)
		{
			erpcrm_begin_step("erpcrm: refreshing a mapping");
			record_refreshed();
			erpcrm_end_step();
		}
		return;
	}
	for (int i = 0; i < ERPCRM_REFRESH_STEPS; i++)
		if (!refresh_step())
			return;
	/* more to do: come back at once, after a round of delivery */
	SetLatch(MyLatch);
}
