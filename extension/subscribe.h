/*-------------------------------------------------------------------------
 *
 * subscribe.h
 *	  The way back (subscribe.c, worker/pull.c): HubSpot changes handed to
 *	  ERP functions.  Settings of the pulls, and the worker's pull step.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_SUBSCRIBE_H
#define ERPCRM_SUBSCRIBE_H

#include "postgres.h"

#include "datatype/timestamp.h"

/* settings (subscribe.c) */
extern int	erpcrm_pull_interval_ms;
extern int	erpcrm_pull_settle_ms;
extern int	erpcrm_pull_share;
extern int	erpcrm_pull_page_size;
extern int	erpcrm_inbox_retention_min;

extern void erpcrm_define_pull_settings(void);

/* What one pull step did (worker/pull.c). */
typedef struct PullOutcome
{
	int			pages;			/* search answers received */
	bool		more;			/* changes wait beyond what was read */
	long		next_ms;		/* when a pull is due next (from now) */
} PullOutcome;

/*
 * Pull changes for every subscription that is due and hand them over.  With
 * outbound_busy (keys were delivered this round) pulls use at most
 * erpcrm.pull_share of the call budget; otherwise as much as HubSpot's
 * search limit allows.
 */
extern void erpcrm_pull(bool outbound_busy, PullOutcome *out);

#endif							/* ERPCRM_SUBSCRIBE_H */
