/*-------------------------------------------------------------------------
 *
 * send.c
 *	  Step 2 of a delivery batch: send, with no transaction open.  The keys
 *	  read are sorted into upserts (by the id property), updates (rows that
 *	  carry a hubspot_id) and archives (keys that left the view); then come
 *	  HubSpot's batch calls and the associations (v4).  Every call honours
 *	  the client-side rate limit and waits out short 429s.  HubSpot's
 *	  refusals of single inputs become the outcomes of their keys; a batch
 *	  refused as a whole is split until the input it refuses stands alone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "activity.h"
#include "client.h"
#include "delivery_int.h"
#include "erpcrm.h"

static void send_split_5xx(Batch *b, BatchKey **keys, int n, bool by_explicit,
						   bool proven, bool transient_before);

/*
 * HubSpot resets the daily budget at midnight in the portal's time zone.
 * When the budget runs low (under a tenth, or under 1,000 calls) or is
 * spent, the portal's time zone is read once from the account details, and
 * the next midnight there is given to the limiter, which otherwise waits
 * for midnight UTC.
 */
static char *portal_time_zone = NULL;
static TimestampTz portal_time_zone_tried = 0;

static TimestampTz
next_portal_midnight(const char *tz, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;
	TimestampTz reset = 0;

	PG_TRY();
	{
		Datum		today = DirectFunctionCall3(timestamptz_trunc_zone,
												CStringGetTextDatum("day"),
												TimestampTzGetDatum(now),
												CStringGetTextDatum(tz));

		/* 36 hours after today's midnight is tomorrow, whatever DST does */
		reset = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_trunc_zone,
														CStringGetTextDatum("day"),
														TimestampTzGetDatum(DatumGetTimestampTz(today) +
																			36 * USECS_PER_HOUR),
														CStringGetTextDatum(tz)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		reset = 0;				/* a time zone PostgreSQL does not know */
	}
	PG_END_TRY();
	return reset;
}

static void
note_daily_reset(Batch *b, const HsResponse *resp, TimestampTz now, bool spent)
{
	bool		low = resp->transport_error == 0 && resp->rl_daily > 0 &&
		resp->rl_daily_remaining >= 0 &&
		resp->rl_daily_remaining < Max(1000, resp->rl_daily / 10);

	if (!low && !spent)
		return;
	if (hs_rate_daily_reset(now) != 0)
		return;					/* known, still ahead */
	if (portal_time_zone == NULL)
	{
		HsResponse	tz_resp;
		const char *fields[1] = {"timeZone"};
		char	   *v[1] = {NULL};

		if (portal_time_zone_tried != 0 && now - portal_time_zone_tried < USECS_PER_HOUR)
			return;
		portal_time_zone_tried = now;
		hs_rate_note_call(now);
		hs_http_request("GET", "/account-info/v3/details", NULL, &tz_resp);
		if (tz_resp.aborted)
			CHECK_FOR_INTERRUPTS();
		b->calls = lappend(b->calls, erpcrm_call_log("GET", "/account-info/v3/details",
													 now, &tz_resp, 0));
		erpcrm_worker_note_call(&tz_resp, tz_resp.transport_error == 0 && tz_resp.status == 429);
		if (tz_resp.transport_error == 0 && tz_resp.status == 200 &&
			hs_parse_fields(tz_resp.body, tz_resp.body_len, 1, fields, v) &&
			v[0] != NULL && v[0][0] != '\0')
			portal_time_zone = MemoryContextStrdup(TopMemoryContext, v[0]);
		if (portal_time_zone == NULL)
			return;
	}
	{
		TimestampTz reset = next_portal_midnight(portal_time_zone, now);

		if (reset > now)
			hs_rate_set_daily_reset(reset, now);
	}
}

/*
 * Make one call, honouring the client-side rate limit and waiting out 429s
 * that ask for a short pause.  Returns false when the call got no usable
 * answer that the caller should look at (the batch outcome says why).
 */
void
call_hubspot(Batch *b, const char *method, const char *path,
			 const char *body, int ninputs, HsResponse *resp)
{
	int			rate_retries = 0;

	for (;;)
	{
		TimestampTz now;
		TimestampTz called_at;
		long		delay;

		/* calls sessions made count in the same budget */
		erpcrm_worker_absorb_session_calls();
		now = GetCurrentTimestamp();
		/* a place in the window is taken at once (databases may share it) */
		delay = hs_rate_take(now);

		if (delay > 0)
		{
			if (delay > 60000)
			{
				/* a long wait (daily limit): give the keys back */
				memset(resp, 0, sizeof(*resp));
				resp->status = 429;
				b->outcome->blocked_until = TimestampTzPlusMilliseconds(now, delay);
				return;
			}
			erpcrm_set_state(ERPCRM_WORKER_RATE_LIMITED, "waiting for the rate limit window");
			erpcrm_worker_sleep(delay, PG_WAIT_EXTENSION);
			continue;
		}

		erpcrm_set_state(ERPCRM_WORKER_SENDING, path);
		erpcrm_worker_step("calling HubSpot");
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("erpcrm: %s %s (%d inputs)", method, path, ninputs));
		hs_http_request(method, path, body, resp);
		if (resp->aborted)
			CHECK_FOR_INTERRUPTS();
		called_at = now;
		now = GetCurrentTimestamp();
		hs_rate_note_response(resp, now);
		b->calls = lappend(b->calls, erpcrm_call_log(method, path, called_at, resp, ninputs));
		note_daily_reset(b, resp, now, false);

		if (resp->transport_error == 0 && resp->status == 429)
		{
			HsError		err;
			TimestampTz until;

			hs_parse_error(resp->body, resp->body_len, &err);
			until = hs_rate_note_429(resp, err.policy_name, now);
			if (err.policy_name != NULL && strcmp(err.policy_name, "DAILY") == 0)
			{
				/* wait for the portal's reset, not midnight UTC */
				note_daily_reset(b, resp, now, true);
				until = TimestampTzPlusMilliseconds(now, hs_rate_delay_ms(now));
			}
			erpcrm_worker_note_call(resp, true);
			if (++rate_retries <= 5 && until - now <= 60 * USECS_PER_SEC)
				continue;		/* the limiter now waits it out */
			b->outcome->blocked_until = until;
			return;
		}
		erpcrm_worker_note_call(resp, false);
		if (resp->transport_error == 0 && resp->status >= 200 && resp->status < 300)
			b->ok_calls++;
		return;
	}
}

/* Mark keys after an answer that concerns the whole call. */
static void
whole_call_outcome(Batch *b, BatchKey **keys, int n, HsResponse *resp,
				   const char *what)
{
	const char *msg;
	HsError		err;
	KeyOutcome	outcome;
	int			status = resp->transport_error ? 0 : (int) resp->status;

	memset(&err, 0, sizeof(err));
	if (resp->transport_error)
	{
		msg = psprintf("%s: no answer from HubSpot: %s", what, resp->transport_message);
		outcome = KO_RETRY;
		b->outcome->transient = true;
		erpcrm_clip(b->outcome->transient_message, msg, sizeof(b->outcome->transient_message));
		for (int i = 0; i < n; i++)
			set_outcome(keys[i], outcome, 0, "NETWORK", msg, NULL);
		return;
	}
	hs_parse_error(resp->body, resp->body_len, &err);
	if (status == 429)
	{
		for (int i = 0; i < n; i++)
		{
			set_outcome(keys[i], KO_WAIT, 429, "RATE_LIMIT",
						"waiting for HubSpot's rate limit", resp->correlation_id);
			keys[i]->wait_ms = Max(1000, (b->outcome->blocked_until - GetCurrentTimestamp()) / 1000);
		}
		return;
	}
	if (status == 401 || status == 403)
	{
		msg = psprintf("HubSpot refused the access token (%d %s): %s",
					   status, err.category[0] ? err.category : "",
					   err.message[0] ? err.message : "no message");
		b->outcome->auth_failed = true;
		erpcrm_clip(b->outcome->auth_message, msg, sizeof(b->outcome->auth_message));
		for (int i = 0; i < n; i++)
		{
			set_outcome(keys[i], KO_WAIT, status, err.category, msg, resp->correlation_id);
			/* the worker as a whole waits; the key is due again at once */
			keys[i]->wait_ms = 1000;
		}
		return;
	}
	if (status >= 500 || status < 200 || (status >= 200 && status < 300))
	{
		/* 5xx, or a success that made no sense */
		msg = (status >= 200 && status < 300) ?
			psprintf("%s: HubSpot's answer (%d) could not be understood", what, status) :
			psprintf("%s: HubSpot answered %d%s%s", what, status,
					 err.message[0] ? ": " : "", truncate_message(err.message));
		b->outcome->transient = true;
		erpcrm_clip(b->outcome->transient_message, msg, sizeof(b->outcome->transient_message));
		for (int i = 0; i < n; i++)
			set_outcome(keys[i], KO_RETRY, status,
						err.category[0] ? err.category : "HTTP_ERROR", msg,
						resp->correlation_id);
		return;
	}
	/* 4xx about this input (a batch of one) */
	for (int i = 0; i < n; i++)
		set_outcome(keys[i], KO_FAILED, status,
					err.category[0] ? err.category : "HTTP_ERROR",
					truncate_message(err.message[0] ? err.message : resp->body),
					resp->correlation_id);
}

static BatchKey *
find_key_by(BatchKey **keys, int n, const char *value, bool by_explicit)
{
	for (int i = 0; i < n; i++)
	{
		const char *v = by_explicit ? keys[i]->explicit_id : keys[i]->id_value;

		if (v != NULL && strcmp(v, value) == 0)
			return keys[i];
	}
	return NULL;
}

/* The call that upserts (or updates by HubSpot id) these keys: its body. */
char *
objects_request(Batch *b, BatchKey **keys, int n, bool by_explicit, char **path)
{
	MappingDef *m = b->mapping;
	HsJsonBody *body = hs_body_new();

	for (int i = 0; i < n; i++)
	{
		if (by_explicit)
			hs_body_add_update(body, keys[i]->explicit_id, b->nprops,
							   (const char *const *) b->prop_names,
							   (const char *const *) keys[i]->values);
		else
			hs_body_add_upsert(body, m->id_property, keys[i]->id_value,
							   b->nprops,
							   (const char *const *) b->prop_names,
							   (const char *const *) keys[i]->values);
	}
	*path = psprintf("%s/%s/batch/%s", HS_OBJECTS_PREFIX, m->object_type,
					 by_explicit ? "update" : "upsert");
	return hs_body_finish(body);
}

/*
 * A 207 whose errors name no input (their context says which property, not
 * which input): the inputs the answer did not mention are the failed ones.
 * One such error and one such input: it is that input's.  More: those inputs
 * are sent again, fewer at a time, until each failure stands alone with
 * HubSpot's reason (upserts and updates by id may be sent twice).
 */
static void
unnamed_errors(Batch *b, BatchKey **keys, int n, bool by_explicit,
			   HsBatchResult *result, HsResponse *resp)
{
	HsErrorItem *unnamed = NULL;
	int			nunnamed = 0;
	BatchKey  **rest;
	int			nrest = 0;

	for (int e = 0; e < result->nerrors; e++)
		if (result->errors[e].nids == 0)
		{
			unnamed = &result->errors[e];
			nunnamed++;
		}
	if (nunnamed == 0)
		return;
	rest = palloc(sizeof(BatchKey *) * n);
	for (int i = 0; i < n; i++)
		if (keys[i]->outcome == KO_NONE)
			rest[nrest++] = keys[i];
	if (nrest == 1 && nunnamed == 1)
		set_outcome(rest[0], KO_FAILED, unnamed->status ? unnamed->status : 400,
					unnamed->category[0] ? unnamed->category : "VALIDATION_ERROR",
					truncate_message(unnamed->message), resp->correlation_id);
	else if (nrest > 0 && nrest < n)
		send_objects(b, rest, nrest, by_explicit);
	else if (nrest > 1)
	{
		send_objects(b, rest, nrest / 2, by_explicit);
		send_objects(b, rest + nrest / 2, nrest - nrest / 2, by_explicit);
	}
	pfree(rest);
}

/*
 * Upsert (by_explicit false) or update by HubSpot id (true) these keys.  A
 * 4xx that rejects the whole batch without naming inputs is split in halves
 * until the bad input stands alone.
 */
void
send_objects(Batch *b, BatchKey **keys, int n, bool by_explicit)
{
	MappingDef *m = b->mapping;
	HsResponse	resp;
	char	   *path;
	char	   *json;
	const char *why = NULL;
	HsBatchResult result;

	if (n == 0)
		return;

	json = objects_request(b, keys, n, by_explicit, &path);

	call_hubspot(b, "POST", path, json, n, &resp);

	if (resp.transport_error == 0 &&
		(resp.status == 200 || resp.status == 201 || resp.status == 207))
	{
		if (!hs_parse_batch(resp.body, resp.body_len,
							by_explicit ? NULL : m->id_property, &result, &why))
		{
			char	   *msg = psprintf("HubSpot's answer to %s could not be understood: %s",
									   path, why ? why : "unknown reason");

			b->outcome->transient = true;
			erpcrm_clip(b->outcome->transient_message, msg, sizeof(b->outcome->transient_message));
			for (int i = 0; i < n; i++)
				set_outcome(keys[i], KO_RETRY, (int) resp.status, "BAD_ANSWER", msg,
							resp.correlation_id);
			return;
		}
		for (int r = 0; r < result.nresults; r++)
		{
			BatchKey   *key = find_key_by(keys, n, result.results[r].key, by_explicit);

			if (key == NULL || key->outcome != KO_NONE)
				continue;
			set_outcome(key, KO_SYNCED, (int) resp.status, NULL, NULL, NULL);
			key->hubspot_id = result.results[r].hubspot_id;
			key->is_new = result.results[r].is_new;
		}
		for (int e = 0; e < result.nerrors; e++)
		{
			HsErrorItem *item = &result.errors[e];

			for (int j = 0; j < item->nids; j++)
			{
				BatchKey   *key = find_key_by(keys, n, item->ids[j], by_explicit);

				if (key == NULL || key->outcome != KO_NONE)
					continue;
				set_outcome(key, KO_FAILED, item->status ? item->status : 400,
							item->category[0] ? item->category : "VALIDATION_ERROR",
							truncate_message(item->message), resp.correlation_id);
			}
		}
		unnamed_errors(b, keys, n, by_explicit, &result, &resp);
		for (int i = 0; i < n; i++)
			if (keys[i]->outcome == KO_NONE)
				set_outcome(keys[i], KO_RETRY, (int) resp.status, "BAD_ANSWER",
							"HubSpot's answer did not mention this input",
							resp.correlation_id);
		return;
	}

	if (resp.transport_error == 0 && resp.status >= 400 && resp.status < 500 &&
		resp.status != 401 && resp.status != 403 && resp.status != 429)
	{
		HsError		err;
		int			named = 0;

		hs_parse_error(resp.body, resp.body_len, &err);
		/* inputs the error names fail; the rest are tried again now */
		for (int j = 0; j < err.nids; j++)
		{
			BatchKey   *key = find_key_by(keys, n, err.ids[j], by_explicit);

			if (key != NULL && key->outcome == KO_NONE)
			{
				set_outcome(key, KO_FAILED, (int) resp.status,
							err.category[0] ? err.category : "HTTP_ERROR",
							truncate_message(err.message), resp.correlation_id);
				named++;
			}
		}
		if (named > 0 || n > 1)
		{
			BatchKey  **rest = palloc(sizeof(BatchKey *) * n);
			int			nrest = 0;

			for (int i = 0; i < n; i++)
				if (keys[i]->outcome == KO_NONE)
					rest[nrest++] = keys[i];
			if (named > 0)
				send_objects(b, rest, nrest, by_explicit);
			else
			{
				send_objects(b, rest, nrest / 2, by_explicit);
				send_objects(b, rest + nrest / 2, nrest - nrest / 2, by_explicit);
			}
			return;
		}
	}
	/* 503 says HubSpot is unavailable; other 5xx may be about an input */
	if (resp.transport_error == 0 && resp.status >= 500 && resp.status != 503 &&
		n > 1 && b->split_5xx == 0)
	{
		send_split_5xx(b, keys, n, by_explicit, false, b->outcome->transient);
		return;
	}
	whole_call_outcome(b, keys, n, &resp, path);
	/* alone: was it found failing alone before?  (record() asks) */
	if (n == 1 && b->split_5xx == 0 && keys[0]->outcome == KO_RETRY &&
		keys[0]->http_status >= 500 && keys[0]->http_status != 503)
		keys[0]->alone_5xx = true;
}

/* HubSpot fails on this input, and not on others: a bounded retry. */
void
mark_input_failing(BatchKey *key)
{
	key->bounded = true;
	if (key->message == NULL || strncmp(key->message, INPUT_FAILING, strlen(INPUT_FAILING)) != 0)
		key->message = psprintf("%s%s", INPUT_FAILING, key->message ? key->message : "");
}

/*
 * A batch that HubSpot answered with a 5xx: is HubSpot failing, or is it one
 * input that HubSpot cannot take?  The batch is sent again in halves.  When
 * no half succeeds either, HubSpot is failing: the keys wait for it, and the
 * worker backs off.  When a half succeeds, the halves that failed are split
 * again, until the inputs that HubSpot refuses stand alone.  Those are
 * retried on their own (the others are delivered), and parked as failed
 * after erpcrm.max_attempts attempts.
 */
static void
send_split_5xx(Batch *b, BatchKey **keys, int n, bool by_explicit,
			   bool proven, bool transient_before)
{
	int			h = n / 2;
	int			ok_before = b->ok_calls;
	struct
	{
		BatchKey  **keys;
		int			n;
	}			half[2] = {{keys, h}, {keys + h, n - h}};

	b->split_5xx++;
	send_objects(b, half[0].keys, half[0].n, by_explicit);
	send_objects(b, half[1].keys, half[1].n, by_explicit);
	b->split_5xx--;
	if (b->ok_calls == ok_before && !proven)
		return;					/* nothing got through: HubSpot is failing */

	/* HubSpot answers: the 5xx belong to the inputs of the failed halves */
	b->outcome->transient = transient_before;
	for (int i = 0; i < 2; i++)
	{
		bool		failed_5xx = half[i].n > 0;

		for (int k = 0; k < half[i].n; k++)
			if (half[i].keys[k]->outcome != KO_RETRY ||
				half[i].keys[k]->http_status < 500 ||
				half[i].keys[k]->http_status == 503)
				failed_5xx = false;
		if (!failed_5xx)
			continue;
		if (half[i].n == 1)
		{
			mark_input_failing(half[i].keys[0]);
			continue;
		}
		for (int k = 0; k < half[i].n; k++)
			half[i].keys[k]->outcome = KO_NONE;
		send_split_5xx(b, half[i].keys, half[i].n, by_explicit, true,
					   transient_before);
	}
	/* other failures (no answer at all) still make the worker back off */
	b->outcome->transient = transient_before;
	for (int k = 0; k < n; k++)
		if (keys[k]->outcome == KO_RETRY && !keys[k]->bounded)
			b->outcome->transient = true;
}

void
send_archives(Batch *b, BatchKey **keys, int n)
{
	HsJsonBody *body;
	HsResponse	resp;
	char	   *path;

	if (n == 0)
		return;

	/*
	 * Whether HubSpot lets a new object take the unique value of an archived
	 * one is not documented.  The id property is cleared before the archive,
	 * so that the key can come back as a new object either way.  An object
	 * gone already (404) is archived all the same.
	 */
	{
		const char *names[1] = {b->mapping->id_property};
		const char *values[1] = {""};

		body = hs_body_new();
		for (int i = 0; i < n; i++)
			hs_body_add_update(body, keys[i]->known_hubspot_id, 1, names, values);
		path = psprintf("%s/%s/batch/update", HS_OBJECTS_PREFIX, b->mapping->object_type);
		call_hubspot(b, "POST", path, hs_body_finish(body), n, &resp);
		if (!(resp.transport_error == 0 &&
			  ((resp.status >= 200 && resp.status < 300) || resp.status == 404 ||
			   resp.status == 400)))
		{
			whole_call_outcome(b, keys, n, &resp, path);
			for (int i = 0; i < n; i++)
				if (keys[i]->outcome == KO_FAILED)
					keys[i]->outcome = KO_RETRY;	/* never parked for this */
			return;
		}
	}
	body = hs_body_new();
	for (int i = 0; i < n; i++)
		hs_body_add_archive(body, keys[i]->known_hubspot_id);
	path = psprintf("%s/%s/batch/archive", HS_OBJECTS_PREFIX, b->mapping->object_type);
	call_hubspot(b, "POST", path, hs_body_finish(body), n, &resp);
	if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
	{
		for (int i = 0; i < n; i++)
			set_outcome(keys[i], KO_ARCHIVED, (int) resp.status, NULL, NULL, NULL);
		return;
	}
	whole_call_outcome(b, keys, n, &resp, path);
}

/*
 * The target this key was associated to through column, per its recorded
 * association state ("column=id;column=id"), or NULL.
 */
static char *
previous_target(const char *state, const char *column)
{
	size_t		len = strlen(column);
	const char *p = state;

	while (p != NULL && *p)
	{
		const char *end = strchr(p, ';');
		size_t		item = end ? (size_t) (end - p) : strlen(p);

		if (item > len && strncmp(p, column, len) == 0 && p[len] == '=')
			return pnstrdup(p + len + 1, item - len - 1);
		p = end ? end + 1 : NULL;
	}
	return NULL;
}

/* Mark keys after an association call that did not succeed. */
static void
association_failed(Batch *b, BatchKey **keys, int n, HsResponse *resp,
				   const char *path, AssocDef *def, int a)
{
	/* the objects are written; the association is retried with them */
	for (int i = 0; i < n; i++)
		keys[i]->outcome = KO_NONE;
	whole_call_outcome(b, keys, n, resp, path);
	for (int i = 0; i < n; i++)
		if (keys[i]->outcome == KO_FAILED)
			keys[i]->message = psprintf("association to %s \"%s\": %s",
										def->target_name,
										keys[i]->assoc_key[a] ? keys[i]->assoc_key[a] : "",
										keys[i]->message ? keys[i]->message : "");
}

/*
 * HubSpot's reason for refusing the association made from this object, or
 * NULL when its errors name other objects.  Errors that name no object at
 * all concern every pair.
 */
static const char *
association_refusal(HsBatchResult *result, const char *from_id)
{
	for (int e = 0; e < result->nerrors; e++)
	{
		HsErrorItem *item = &result->errors[e];

		if (item->nids == 0)
			return item->message;
		for (int j = 0; j < item->nids; j++)
			if (from_id != NULL && strcmp(item->ids[j], from_id) == 0)
				return item->message;
	}
	return NULL;
}

/* The call that makes the associations of these keys (association a). */
char *
association_request(Batch *b, AssocDef *def, int a, BatchKey **adds, int nadd,
					char **path)
{
	HsJsonBody *body = hs_body_new();

	for (int i = 0; i < nadd; i++)
		hs_body_add_association(body, adds[i]->hubspot_id, adds[i]->assoc_to[a],
								def->category, def->type_id);
	*path = psprintf("%s/%s/%s/batch/%s", HS_ASSOCIATIONS_PREFIX,
					 b->mapping->object_type, def->target_type,
					 def->type_id > 0 ? "create" : "associate/default");
	return hs_body_finish(body);
}

/*
 * Make the associations of these keys (association a).  A 4xx that refuses
 * the whole call without naming pairs is split in halves until the pair it
 * refuses stands alone, as for objects: one bad pair fails alone.
 */
static void
send_association_adds(Batch *b, AssocDef *def, int a, BatchKey **adds, int nadd)
{
	HsResponse	resp;
	char	   *path;
	char	   *json = association_request(b, def, a, adds, nadd, &path);

	call_hubspot(b, "POST", path, json, nadd, &resp);
	if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
	{
		HsBatchResult result;
		const char *why;

		/*
		 * errors inside a 200 (batch/associate/default has no 207) or a 207
		 * name the failed pairs
		 */
		if (hs_parse_batch(resp.body, resp.body_len, NULL, &result, &why) &&
			result.nerrors > 0)
		{
			for (int i = 0; i < nadd; i++)
			{
				const char *refusal = association_refusal(&result, adds[i]->hubspot_id);

				if (refusal == NULL)
					continue;	/* its pair was made */
				set_outcome(adds[i], KO_RETRY, resp.status, "ASSOCIATION",
							psprintf("association to %s \"%s\" was refused: %s",
									 def->target_name, adds[i]->assoc_key[a],
									 truncate_message(refusal)),
							resp.correlation_id);
				adds[i]->bounded = true;
			}
		}
		return;
	}
	if (resp.transport_error == 0 && resp.status >= 400 && resp.status < 500 &&
		resp.status != 401 && resp.status != 403 && resp.status != 429 &&
		nadd > 1)
	{
		send_association_adds(b, def, a, adds, nadd / 2);
		send_association_adds(b, def, a, adds + nadd / 2, nadd - nadd / 2);
		return;
	}
	association_failed(b, adds, nadd, &resp, path, def, a);
}

/*
 * Association a of a key just written: the target to associate it to now
 * (NULL: none), and the one it was associated to before (NULL: none).
 */
void
association_change(BatchKey *key, AssocDef *def, int a, const char **to,
				   char **old)
{
	/* "" = the target left its view: no association to make */
	*to = (key->assoc_to[a] && key->assoc_to[a][0]) ? key->assoc_to[a] : NULL;
	*old = key->is_new ? NULL : previous_target(key->prev_assoc, def->column);
}

/*
 * Associate the objects just written to the objects their association
 * columns name, one call per association (up to 100 pairs each).  Where the
 * key's recorded state shows the same association already made, no call is
 * needed; where the target changed (a contact moved to another company), the
 * old association is removed.
 */
void
send_associations(Batch *b)
{
	MappingDef *m = b->mapping;

	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		BatchKey  **adds;
		BatchKey  **removes;
		char	  **old_ids;
		int			nadd = 0;
		int			nremove = 0;
		HsJsonBody *remove_body;
		HsResponse	resp;
		char	   *path;

		if (def->as_property != NULL)
			continue;			/* sent as a property with the object */
		remove_body = hs_body_new();
		adds = palloc(sizeof(BatchKey *) * b->nkeys);
		removes = palloc(sizeof(BatchKey *) * b->nkeys);
		old_ids = palloc(sizeof(char *) * b->nkeys);
		for (int i = 0; i < b->nkeys; i++)
		{
			BatchKey   *key = &b->keys[i];
			const char *to;
			char	   *old;

			if (key->outcome != KO_SYNCED || key->hubspot_id == NULL ||
				key->assoc_to == NULL)
				continue;
			association_change(key, def, a, &to, &old);
			if (to != NULL && (old == NULL || strcmp(old, to) != 0))
				adds[nadd++] = key;
			if (old != NULL && (to == NULL || strcmp(old, to) != 0))
			{
				hs_body_add_association_archive(remove_body, key->hubspot_id, old);
				old_ids[nremove] = old;
				removes[nremove++] = key;
			}
		}

		if (nremove > 0)
		{
			path = psprintf("%s/%s/%s/batch/archive", HS_ASSOCIATIONS_PREFIX,
							m->object_type, def->target_type);
			call_hubspot(b, "POST", path, hs_body_finish(remove_body), nremove, &resp);
			if (!(resp.transport_error == 0 && resp.status >= 200 && resp.status < 300))
				association_failed(b, removes, nremove, &resp, path, def, a);
		}
		if (nadd > 0)
			send_association_adds(b, def, a, adds, nadd);
	}

	/* what is associated now, for the next change of these keys */
	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];
		StringInfoData state;

		if (key->outcome != KO_SYNCED || key->assoc_to == NULL)
			continue;
		initStringInfo(&state);
		for (int a = 0; a < m->nassoc; a++)
		{
			/* as_property links too: their target's new id resends them */
			if (key->assoc_to[a] == NULL || key->assoc_to[a][0] == '\0')
				continue;
			appendStringInfo(&state, "%s%s=%s", state.len ? ";" : "",
							 m->assoc[a].column, key->assoc_to[a]);
		}
		key->new_assoc = state.data;
	}
}

int
prop_index(Batch *b, const char *name)
{
	for (int p = 0; p < b->nviewprops; p++)
		if (strcmp(b->prop_names[p], name) == 0)
			return p;
	return -1;
}

/*
 * Rows whose hubspot_owner_id is empty take the owner of the object an
 * inherit_owner association points to, read from HubSpot in one batch/read.
 */
void
inherit_owners(Batch *b)
{
	MappingDef *m = b->mapping;
	int			owner = prop_index(b, "hubspot_owner_id");

	if (owner < 0)
		return;
	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		BatchKey  **keys = palloc(sizeof(BatchKey *) * b->nkeys);
		int			n = 0;
		HsJsonBody *body;
		HsResponse	resp;
		char	   *path;
		int			nres;
		char	  **ids;
		char	  **owners;
		const char *prop = "hubspot_owner_id";

		if (!def->inherit_owner)
			continue;
		body = hs_body_new();
		for (int i = 0; i < b->nkeys; i++)
		{
			BatchKey   *key = &b->keys[i];

			if (key->outcome != KO_NONE || !key->in_view ||
				key->values[owner][0] != '\0' ||
				key->assoc_to[a] == NULL || key->assoc_to[a][0] == '\0')
				continue;
			keys[n++] = key;
			hs_body_add_read(body, key->assoc_to[a]);
		}
		if (n == 0)
			continue;
		hs_body_set_properties(body, 1, &prop);
		path = psprintf("%s/%s/batch/read", HS_OBJECTS_PREFIX, def->target_type);
		call_hubspot(b, "POST", path, hs_body_finish(body), n, &resp);
		if (resp.transport_error == 0 && (resp.status == 200 || resp.status == 207) &&
			hs_parse_property(resp.body, resp.body_len, prop, &nres, &ids, &owners))
		{
			for (int i = 0; i < n; i++)
				for (int r = 0; r < nres; r++)
					if (strcmp(ids[r], keys[i]->assoc_to[a]) == 0 && owners[r] != NULL)
						keys[i]->values[owner] = owners[r];
			continue;
		}
		if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
			resp.status = 502;	/* an answer that makes no sense: retry */
		whole_call_outcome(b, keys, n, &resp, path);
	}
}

/*
 * One search for these candidates' match values; the first record found
 * for a value is adopted.  An answer cut short (more records than one page
 * holds, or than HubSpot's 10,000-result cap) cannot prove that a value has
 * no record: the candidates are searched again in halves, down to one value
 * a search, whose first page is enough.  HubSpot limits searches to a few
 * per second, so they are spaced.
 */
static void
match_search(Batch *b, BatchKey **cand, int n, int mp)
{
	MappingDef *m = b->mapping;
	const char **values = palloc(sizeof(char *) * n);
	HsResponse	resp;
	char	   *path;
	int			nres;
	char	  **ids;
	char	  **found;
	long		wait;
	const char *fields[1] = {"total"};
	char	   *total[1] = {NULL};

	for (int i = 0; i < n; i++)
		values[i] = cand[i]->values[mp];
	wait = hs_rate_search_slot(GetCurrentTimestamp());
	if (wait > 0)
		erpcrm_worker_sleep(wait, PG_WAIT_EXTENSION);

	path = psprintf("%s/%s/search", HS_OBJECTS_PREFIX, m->object_type);
	call_hubspot(b, "POST", path,
				 hs_search_body(m->match_property, n, values, m->id_property, 100),
				 n, &resp);
	if (!(resp.transport_error == 0 && resp.status == 200 &&
		  hs_parse_property(resp.body, resp.body_len, m->match_property,
							&nres, &ids, &found)))
	{
		/* no answer: creating now could duplicate a record; retry later */
		if (resp.transport_error == 0 && resp.status >= 200 && resp.status < 300)
			resp.status = 502;
		whole_call_outcome(b, cand, n, &resp, path);
		return;
	}
	for (int r = 0; r < nres; r++)
	{
		if (found[r] == NULL)
			continue;
		for (int i = 0; i < n; i++)
			if (cand[i]->explicit_id == NULL &&
				pg_strcasecmp(cand[i]->values[mp], found[r]) == 0)
			{
				/* first record found wins; the others stay as they are */
				cand[i]->explicit_id = ids[r];
				break;
			}
	}
	if (n > 1 && hs_parse_fields(resp.body, resp.body_len, 1, fields, total) &&
		total[0] != NULL && atol(total[0]) > nres)
	{
		BatchKey  **rest = palloc(sizeof(BatchKey *) * n);
		int			nrest = 0;

		for (int i = 0; i < n; i++)
			if (cand[i]->explicit_id == NULL && cand[i]->outcome == KO_NONE)
				rest[nrest++] = cand[i];
		if (nrest == 0)
			return;
		if (nrest < n)
			match_search(b, rest, nrest, mp);
		else
		{
			match_search(b, rest, nrest / 2, mp);
			match_search(b, rest + nrest / 2, nrest - nrest / 2, mp);
		}
	}
}

/*
 * Before creating objects, adopt HubSpot records that carry the same value
 * of the mapping's match property and no ERP id yet (companies created by
 * hand before the ERP was connected): they are updated by their id, which
 * also sets their id property.  One search call per batch; HubSpot limits
 * searches to a few per second, so they are spaced.
 */
void
match_existing(Batch *b, BatchKey **upserts, int *nup,
			   BatchKey **updates, int *nupd)
{
	MappingDef *m = b->mapping;
	int			mp;
	BatchKey  **cand;
	int			n = 0;
	int			kept = 0;

	if (m->match_property == NULL || *nup == 0)
		return;
	mp = prop_index(b, m->match_property);
	if (mp < 0)
		return;
	cand = palloc(sizeof(BatchKey *) * *nup);
	for (int i = 0; i < *nup; i++)
	{
		BatchKey   *key = upserts[i];

		if (key->known_hubspot_id != NULL || key->values[mp][0] == '\0')
			continue;
		cand[n++] = key;
	}
	if (n == 0)
		return;

	match_search(b, cand, n, mp);

	/*
	 * HubSpot's search finds a record only some seconds after it was
	 * written.  A key whose first search found nothing is searched once
	 * more after that delay before a new record is created, so that a
	 * record made by hand just before is adopted, not duplicated.
	 */
	if (b->links12)
		for (int i = 0; i < n; i++)
			if (cand[i]->outcome == KO_NONE && cand[i]->explicit_id == NULL &&
				!cand[i]->searched_once)
			{
				set_outcome(cand[i], KO_WAIT, 0, "WAITING_FOR_SEARCH",
							psprintf("no HubSpot record has %s \"%s\" yet; searching once more after HubSpot's indexing delay before creating one",
									 m->match_property, cand[i]->values[mp]),
							NULL);
				cand[i]->wait_ms = ERPCRM_SEARCH_SETTLE_MS;
			}

	/* adopted keys move to the updates, failed ones leave */
	for (int i = 0; i < *nup; i++)
	{
		BatchKey   *key = upserts[i];

		if (key->outcome != KO_NONE)
			continue;
		if (key->explicit_id != NULL)
			updates[(*nupd)++] = key;
		else
			upserts[kept++] = key;
	}
	*nup = kept;
}

/*
 * Sort the keys read into upserts, updates (rows with a hubspot_id) and
 * archives (keys that left the view); keys that wait for an associated
 * object, or cannot be sent, get their outcome here.
 */
void
classify_keys(Batch *b, BatchKey **upserts, int *nup, BatchKey **updates,
			  int *nupd, BatchKey **archives, int *narch)
{
	MappingDef *m = b->mapping;

	for (int i = 0; i < b->nkeys; i++)
	{
		BatchKey   *key = &b->keys[i];
		bool		waiting = false;

		if (key->outcome != KO_NONE)
			continue;
		if (!key->in_view)
		{
			if (!m->archive)
				set_outcome(key, KO_GONE_KEPT, 0, NULL, NULL, NULL);
			else if (key->known_hubspot_id == NULL || key->already_archived)
				set_outcome(key, KO_ARCHIVED, 0, NULL, NULL, NULL);	/* no call */
			else
				archives[(*narch)++] = key;
			continue;
		}
		/* an associated object not in HubSpot yet: wait for it */
		for (int a = 0; a < m->nassoc; a++)
		{
			if (key->assoc_key[a] != NULL && key->assoc_to[a] == NULL)
			{
				set_outcome(key, KO_WAIT, 0, "WAITING_FOR_DEPENDENCY",
							psprintf("waiting for %s \"%s\" to reach HubSpot",
									 m->assoc[a].target_name, key->assoc_key[a]),
							NULL);
				key->wait_ms = Max(erpcrm_retry_base_ms, 1000);
				waiting = true;
				break;
			}
		}
		if (waiting)
			continue;
		if (key->id_value == NULL || key->id_value[0] == '\0')
		{
			set_outcome(key, KO_FAILED, 0, "ERP_EMPTY_ID",
						psprintf("the id property \"%s\" of this row is empty", m->id_property),
						NULL);
			continue;
		}
		if (key->explicit_id != NULL)
			updates[(*nupd)++] = key;
		else
			upserts[(*nup)++] = key;
	}
}
