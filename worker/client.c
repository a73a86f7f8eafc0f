/*-------------------------------------------------------------------------
 *
 * client.c
 *	  erpcrm's use of the HubSpot client (hubspot/): the client configured
 *	  from erpcrm's settings, and its calls counted in shared memory
 *	  (erpcrm.worker) and in the worker's rate limiter.
 *
 * The worker and the sessions (setup.c) call HubSpot through this file's
 * configuration; the client itself knows nothing of erpcrm's settings.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "client.h"
#include "erpcrm.h"

/* The User-Agent of every call. */
#define ERPCRM_USER_AGENT	"erpcrm/" ERPCRM_VERSION

/* Point the HTTP client at HubSpot as the settings say, with this token. */
void
erpcrm_configure_http(const char *token)
{
	HsHttpConfig config;
	ErpcrmPortalConfig portal;

	/* this database's portal (erpcrm.portal), else the cluster's */
	erpcrm_portal_config(&portal);
	config.base_url = portal.hubspot_url;
	config.token = token;
	config.ca_file = erpcrm_ca_file;
	config.connect_timeout_ms = erpcrm_connect_timeout_ms;
	config.timeout_ms = erpcrm_request_timeout_ms;
	config.user_agent = ERPCRM_USER_AGENT;
	hs_http_configure(&config);
	/* the API paths: /crm/v3 or a date-versioned family, per portal */
	(void) hs_set_api_version(portal.api_version);
}

/* The worker made a call: count it for erpcrm.worker. */
void
erpcrm_worker_note_call(const HsResponse *resp, bool rate_limited)
{
	SpinLockAcquire(&erpcrm_shared->mutex);
	erpcrm_shared->calls++;
	if (rate_limited)
		erpcrm_shared->rate_limited++;
	erpcrm_shared->last_call = GetCurrentTimestamp();
	erpcrm_shared->window_remaining = hs_rate_window_remaining();
	erpcrm_shared->daily_remaining = hs_rate_daily_remaining();
	SpinLockRelease(&erpcrm_shared->mutex);
}

/* Count the calls sessions made to HubSpot in the worker's limiter. */
void
erpcrm_worker_absorb_session_calls(void)
{
	static uint64 seen = 0;
	TimestampTz calls[ERPCRM_SESSION_CALLS];
	int			n = erpcrm_take_session_calls(&seen, calls);

	for (int i = 0; i < n; i++)
		hs_rate_note_call(calls[i]);
}
