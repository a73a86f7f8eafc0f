/*-------------------------------------------------------------------------
 *
 * refresh.h
 *	  The worker's refresh of mappings that have refresh_every (refresh.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_REFRESH_H
#define ERPCRM_REFRESH_H

/* run a little of the refresh that is due, if any (worker loop) */
extern void erpcrm_refresh_some(void);

#endif							/* ERPCRM_REFRESH_H */
