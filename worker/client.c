/*-------------------------------------------------------------------------
 *
 * client.c
 *	  erpcrm's use of the HubSpot client (hubspot/): the client configured
 *	  from erpcrm's settings, and its calls counted in shared memory
 *	  (erpcrm.worker) and in the worker's rate limiter.
 *
 * Every call the worker makes, for a delivery or a subscription's pull, is
 * kept in erpcrm.api_log through erpcrm_call_log() and erpcrm_log_call().
 *
 * The worker and the sessions (setup.c) call HubSpot through this file's
 * configuration; the client itself knows nothing of erpcrm's settings.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "client.h"
#include "kept.h"
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
	/* the worker's family, for erpcrm.workers */
	if (erpcrm_shared != NULL && erpcrm_shared->worker_pid == MyProcPid)
	{
		SpinLockAcquire(&erpcrm_shared->mutex);
		strlcpy(erpcrm_shared->api_version,
				portal.api_version[0] != '\0' ? portal.api_version : "v3",
				sizeof(erpcrm_shared->api_version));
		erpcrm_shared->own_api_version = portal.own_api_version;
		SpinLockRelease(&erpcrm_shared->mutex);
	}
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

/*
 * What erpcrm.api_log keeps of a call made at called_at: its answer's
 * status, latency and correlation id, and what went wrong (HubSpot's error
 * category, RATE_LIMIT for a 429 without one, NETWORK with no answer).
 */
CallLog *
erpcrm_call_log(const char *method, const char *path, TimestampTz called_at,
				const HsResponse *resp, int inputs)
{
	CallLog    *log = palloc0(sizeof(CallLog));

	log->called_at = called_at;
	log->method = method;
	log->path = pstrdup(path);
	log->status = resp->transport_error ? 0 : resp->status;
	log->latency_ms = resp->elapsed_ms;
	log->inputs = inputs;
	log->correlation_id = resp->correlation_id[0] ? pstrdup(resp->correlation_id) : NULL;
	if (resp->transport_error != 0)
		log->category = pstrdup("NETWORK");
	else if (resp->status >= 400)
	{
		HsError		err;

		hs_parse_error(resp->body, resp->body_len, &err);
		if (err.category[0])
			log->category = pstrdup(err.category);
		else if (resp->status == 429)
			log->category = pstrdup("RATE_LIMIT");
	}
	return log;
}

/*
 * Keep a call in erpcrm.api_log (SPI connected): a delivery's, counted for
 * its mapping (0: none; v11: the SQL has _log_call's 1.1 arguments), or a
 * pull's, counted for its subscription.  Rows older than
 * erpcrm.api_log_retention go now and then.
 */
void
erpcrm_log_call(const CallLog *c, int32 mapping_id, bool v11, int32 subscription_id)
{
	Oid			types[10] = {TEXTOID, TEXTOID, INT4OID, FLOAT8OID, INT4OID,
	TEXTOID, TEXTOID, INT4OID, INTERVALOID, TIMESTAMPTZOID};
	Datum		args[10];
	char		nulls[10] = "          ";
	Interval   *retention = palloc0(sizeof(Interval));
	const char *sql;
	int			nargs = 10;

	retention->time = (int64) erpcrm_api_log_retention_min * 60 * USECS_PER_SEC;
	args[0] = CStringGetTextDatum(c->method);
	args[1] = CStringGetTextDatum(c->path);
	args[2] = Int32GetDatum((int32) c->status);
	nulls[2] = c->status == 0 ? 'n' : ' ';
	args[3] = Float8GetDatum(c->latency_ms);
	args[4] = Int32GetDatum(c->inputs);
	args[5] = c->category ? CStringGetTextDatum(c->category) : (Datum) 0;
	nulls[5] = c->category ? ' ' : 'n';
	args[6] = c->correlation_id ? CStringGetTextDatum(c->correlation_id) : (Datum) 0;
	nulls[6] = c->correlation_id ? ' ' : 'n';
	args[7] = Int32GetDatum(subscription_id != 0 ? subscription_id : mapping_id);
	nulls[7] = subscription_id == 0 && mapping_id == 0 ? 'n' : ' ';
	args[8] = PointerGetDatum(retention);
	args[9] = TimestampTzGetDatum(c->called_at);
	if (subscription_id != 0)
		sql = "SELECT erpcrm._log_pull_call($8, $10, $1, $2, $3, $4, $6, $7, $9)";
	else if (v11)
		sql = "SELECT erpcrm._log_call($10, $1, $2, $3, $4, $5, $6, $7, $8, $9)";
	else
	{
		sql = "SELECT erpcrm._log_call($1, $2, $3, $4, $5, $6, $7, $8, $9)";
		nargs = 9;
	}
	if (erpcrm_execute_kept(sql, nargs, types, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "logging a HubSpot call failed");
}
