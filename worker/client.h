/*-------------------------------------------------------------------------
 *
 * client.h
 *	  erpcrm's use of the HubSpot client (client.c): configured from
 *	  erpcrm's settings, its calls counted in shared memory and in the
 *	  worker's rate limiter.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_CLIENT_H
#define ERPCRM_CLIENT_H

#include "postgres.h"

#include "hubspot.h"

extern void erpcrm_configure_http(const char *token);
extern void erpcrm_worker_note_call(const HsResponse *resp, bool rate_limited);
extern void erpcrm_worker_absorb_session_calls(void);

#endif							/* ERPCRM_CLIENT_H */
