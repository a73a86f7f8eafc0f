/*-------------------------------------------------------------------------
 *
 * activity.c
 *	  What the worker is doing: the step that the context of its errors
 *	  and erpcrm.worker.detail name, its transactions (one per step), and
 *	  its interruptible waits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/snapmgr.h"

#include "activity.h"

static const char *cur_step = NULL;

/* the memory context the current transaction step was begun in */
static MemoryContext step_caller_cxt = NULL;

/* Name what the worker does now (NULL: nothing in particular). */
void
erpcrm_worker_step(const char *step)
{
	cur_step = step;
}

const char *
erpcrm_worker_current_step(void)
{
	return cur_step;
}

/* Wait on the latch for up to ms, waking for commits, signals, reloads. */
void
erpcrm_worker_sleep(long ms, uint32 wait_event_info)
{
	if (ms <= 0)
		return;
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, wait_event_info);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Run a few statements in a transaction of their own: begin_step starts
 * it, with SPI connected, a snapshot and activity (what pg_stat_activity
 * shows); end_step commits it and returns to the caller's memory context.
 * An ERROR in between is cleaned up by the worker loop's
 * AbortCurrentTransaction().  Steps do not nest.
 */
void
erpcrm_begin_step(const char *activity)
{
	step_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
erpcrm_end_step(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	/* the commit leaves us in TopMemoryContext: go back */
	MemoryContextSwitchTo(step_caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * In the PG_CATCH of a step (or of a cycle): take the error into cxt, roll
 * the transaction back, and report the error at LOG as it was raised
 * (SQLSTATE, detail, hint, context).  The worker goes on; the caller says
 * where it failed, from the error returned.
 */
ErrorData *
erpcrm_step_failed(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(cxt);
	edata->elevel = LOG;
	ThrowErrorData(edata);
	return edata;
}
