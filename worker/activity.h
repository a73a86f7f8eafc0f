/*-------------------------------------------------------------------------
 *
 * activity.h
 *	  What the worker is doing (activity.c): the step its errors and
 *	  erpcrm.worker name, a transaction per step, and its waits on the
 *	  latch.  Used by the loop (worker.c) and the steps of a delivery alike.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_ACTIVITY_H
#define ERPCRM_ACTIVITY_H

#include "postgres.h"

extern void erpcrm_worker_step(const char *step);
extern const char *erpcrm_worker_current_step(void);
extern void erpcrm_worker_sleep(long ms, uint32 wait_event_info);
extern void erpcrm_begin_step(const char *activity);
extern void erpcrm_end_step(void);
extern ErrorData *erpcrm_step_failed(MemoryContext cxt);

#endif							/* ERPCRM_ACTIVITY_H */
