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

#include "utils/timestamp.h"

#include "hubspot.h"

/* One HubSpot call, as erpcrm.api_log keeps it. */
typedef struct CallLog
{
	TimestampTz called_at;
	const char *method;
	char	   *path;
	long		status;			/* 0: no answer */
	double		latency_ms;
	int			inputs;
	char	   *category;		/* HubSpot's error category, NETWORK, or NULL */
	char	   *correlation_id;
} CallLog;

extern void erpcrm_configure_http(const char *token);
extern CallLog *erpcrm_call_log(const char *method, const char *path,
								TimestampTz called_at, const HsResponse *resp,
								int inputs);
extern void erpcrm_log_call(const CallLog *c, int32 mapping_id, bool v11,
							int32 subscription_id);
extern void erpcrm_worker_note_call(const HsResponse *resp, bool rate_limited);
extern void erpcrm_worker_absorb_session_calls(void);

#endif							/* ERPCRM_CLIENT_H */
