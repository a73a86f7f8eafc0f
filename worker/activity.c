/*-------------------------------------------------------------------------
 *
 * activity.c
 *	  What the worker is doing: the step that the context of its errors
 *	  and erpcrm.worker.detail name, and its interruptible waits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/latch.h"

#include "activity.h"

static const char *cur_step = NULL;

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
