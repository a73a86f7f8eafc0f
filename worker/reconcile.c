/*-------------------------------------------------------------------------
 *
 * reconcile.c
 *	  erpcrm.reconcile(): read HubSpot back and find where it differs from
 *	  what erpcrm sent.  The worker runs one step of the oldest run at a
 *	  time, when no key is due, so that delivery always goes first:
 *
 *	  objects phase, one step per batch of up to 100 keys that are synced
 *	  and not dirty, in the order of their keys:
 *		1. in a transaction: the keys after the run's cursor, and their rows
 *		   read from the mapping view as a batch reads them; commit;
 *		2. with no transaction open: a batch/read by the id property (the
 *		   properties erpcrm sends); a batch/read by HubSpot id of the keys
 *		   not found, which tells an object deleted from one merged or one
 *		   whose id property was changed by hand; a v4 associations
 *		   batch/read per association;
 *		3. in a transaction: the findings (erpcrm._reconcile_checked), the
 *		   calls (erpcrm.api_log).
 *	  unknown phase, one step per page of 200: a search for the records that
 *	  have the id property, by ascending HubSpot id; the ERP ids that no
 *	  mapping of the object type knows, and that are not in the view, are
 *	  reported (erpcrm._reconcile_scanned).
 *
 *	  Every call counts in the run's budget and in the rate limit.  A run
 *	  whose budget would not cover its next step stops (budget_spent); the
 *	  next run of the mapping goes on from there.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "activity.h"
#include "delivery_int.h"
#include "erpcrm.h"
#include "hubspot.h"

/* HubSpot's search allows a few calls a second: space them */
#define RECONCILE_SEARCH_PAGE		200

/* The run the worker is working on, as erpcrm._reconcile_next() gave it. */
typedef struct Run
{
	int64		run_id;
	int32		mapping_id;
	bool		repair;
	int			budget;
	int			calls;
	bool		unknown_phase;
	char	   *cursor;
	char	   *search_after;
	int64		keys_checked;
} Run;

/* What one step found, as arrays for erpcrm._reconcile_checked(). */
typedef struct Findings
{
	List	   *kinds;
	List	   *keys;
	List	   *hubspot_ids;
	List	   *properties;
	List	   *erp_values;
	List	   *hubspot_values;
	List	   *details;
} Findings;


/* A key's row as a batch would send it. */
typedef struct KeyRow
{
	char	   *erp_id;			/* in: the key */
	char	   *known_hubspot_id;	/* in: its HubSpot id, or NULL */
	bool		in_view;		/* the view has a row for it */
	bool		sendable;		/* read, and every value can be sent */
	char	   *id_value;		/* value of the id property */
	char	  **values;			/* one per property name */
	char	  **assoc_key;		/* per association, the target's erp_id */
	char	  **assoc_to;		/* per association, the target's HubSpot id
								 * ("" none, NULL not in HubSpot yet) */
} KeyRow;

/*
 * The rows of these keys, read from the mapping view as a batch reads them
 * (as its owner, in a security-restricted operation).  SPI is connected
 * and a snapshot is active.
 */
static void
read_key_rows(MappingDef *m, int n, KeyRow *rows, int *nprops, char ***names)
{
	Batch		b;
	DeliveryOutcome outcome;

	init_batch(&b, m, &outcome, CurrentMemoryContext, n);
	for (int i = 0; i < n; i++)
	{
		b.keys[i].erp_id = rows[i].erp_id;
		b.keys[i].known_hubspot_id = rows[i].known_hubspot_id;
	}
	read_rows(&b);
	*nprops = b.nprops;
	*names = b.prop_names;
	for (int i = 0; i < n; i++)
	{
		BatchKey   *key = &b.keys[i];

		rows[i].in_view = key->in_view;
		rows[i].sendable = key->in_view && key->outcome == KO_NONE &&
			key->id_value != NULL && key->id_value[0] != '\0';
		rows[i].id_value = key->id_value;
		rows[i].values = key->values;
		rows[i].assoc_key = key->assoc_key;
		rows[i].assoc_to = key->assoc_to;
	}
}

/*
 * The calls of one step are made as a batch's (within the rate limit,
 * waiting out short 429s) and logged as a batch's, under the mapping.
 */
static Batch *
calls_of(MappingDef *m, DeliveryOutcome *out)
{
	Batch	   *b = palloc(sizeof(Batch));

	init_batch(b, m, out, CurrentMemoryContext, 0);
	return b;
}

static void
found(Findings *f, const char *kind, const char *erp_id, const char *hubspot_id,
	  const char *property, const char *erp_value, const char *hubspot_value,
	  const char *detail)
{
	f->kinds = lappend(f->kinds, (void *) kind);
	f->keys = lappend(f->keys, (void *) erp_id);
	f->hubspot_ids = lappend(f->hubspot_ids, (void *) hubspot_id);
	f->properties = lappend(f->properties, (void *) property);
	f->erp_values = lappend(f->erp_values, (void *) erp_value);
	f->hubspot_values = lappend(f->hubspot_values, (void *) hubspot_value);
	f->details = lappend(f->details, (void *) detail);
}

static Datum
int8_array(List *values)
{
	int			n = list_length(values);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i = 0;
	ListCell   *lc;

	foreach(lc, values)
		elems[i++] = Int64GetDatum(*(int64 *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/* ----------------------------------------------------------------
 * Comparing what erpcrm sends with what HubSpot holds
 * ----------------------------------------------------------------
 */

/* "-0012.500" -> "-12.5"; NULL when s is no plain decimal */
static char *
canonical_decimal(const char *s)
{
	const char *p = s;
	bool		neg = false;
	const char *int_start;
	const char *int_end;
	const char *frac_start = NULL;
	const char *frac_end = NULL;
	StringInfoData buf;

	if (*p == '-' || *p == '+')
		neg = (*p++ == '-');
	int_start = p;
	while (*p >= '0' && *p <= '9')
		p++;
	int_end = p;
	if (*p == '.')
	{
		frac_start = ++p;
		while (*p >= '0' && *p <= '9')
			p++;
		frac_end = p;
	}
	if (*p != '\0' || (int_end == int_start && (frac_start == NULL || frac_end == frac_start)))
		return NULL;
	while (int_start < int_end - 1 && *int_start == '0')
		int_start++;
	if (frac_start != NULL)
		while (frac_end > frac_start && frac_end[-1] == '0')
			frac_end--;
	initStringInfo(&buf);
	if (int_start == int_end)
		appendStringInfoChar(&buf, '0');
	else
		appendBinaryStringInfo(&buf, int_start, int_end - int_start);
	if (frac_start != NULL && frac_end > frac_start)
	{
		appendStringInfoChar(&buf, '.');
		appendBinaryStringInfo(&buf, frac_start, frac_end - frac_start);
	}
	if (neg && strcmp(buf.data, "0") != 0)
		return psprintf("-%s", buf.data);
	return buf.data;
}

static bool
all_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/*
 * A date or a datetime in the form erpcrm sends it: "YYYY-MM-DD", or
 * "YYYY-MM-DDTHH:MM:SS.mmmZ" (values.c).  HubSpot may answer with epoch
 * milliseconds, or without the milliseconds, or a date as a datetime at
 * midnight UTC.  NULL when s is neither.
 */
static char *
canonical_time(const char *s, bool as_date)
{
	int			y,
				mo,
				d,
				h = 0,
				mi = 0,
				sec = 0,
				ms = 0;
	char		rest[16] = "";

	if (all_digits(s) && strlen(s) <= 15)
	{
		int64		epoch_ms = strtoi64(s, NULL, 10);
		TimestampTz ts = (TimestampTz) epoch_ms * 1000 -
		(TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
		struct pg_tm tm;
		fsec_t		fsec;

		if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
			return NULL;
		y = tm.tm_year;
		mo = tm.tm_mon;
		d = tm.tm_mday;
		h = tm.tm_hour;
		mi = tm.tm_min;
		sec = tm.tm_sec;
		ms = (int) (fsec / 1000);
	}
	else if (sscanf(s, "%4d-%2d-%2d%15s", &y, &mo, &d, rest) >= 3)
	{
		if (rest[0] != '\0')
		{
			int			frac = 0;
			char		z[4] = "";

			if (sscanf(rest, "T%2d:%2d:%2d.%3d%3s", &h, &mi, &sec, &frac, z) == 5 ||
				sscanf(rest, "T%2d:%2d:%2d%3s", &h, &mi, &sec, z) == 4)
			{
				if (strcmp(z, "Z") != 0)
					return NULL;
				ms = frac;
			}
			else
				return NULL;
		}
	}
	else
		return NULL;
	if (as_date)
		return (h || mi || sec || ms) ? NULL : psprintf("%04d-%02d-%02d", y, mo, d);
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo, d, h, mi, sec, ms);
}

/*
 * Does HubSpot hold what erpcrm sends?  An absent value is "" (erpcrm
 * sends "" for NULL, which clears the property); numbers compare as
 * numbers, dates and datetimes as instants, booleans without case; HubSpot
 * keeps e-mail addresses and domains in lower case, and text without
 * leading or trailing white space.
 */
static bool
same_value(const char *property, const char *sent, const char *held)
{
	char	   *a;
	char	   *b;
	bool		date;
	size_t		len;

	if (held == NULL)
		held = "";
	if (strcmp(sent, held) == 0)
		return true;
	/* white space HubSpot trims */
	while (isspace((unsigned char) *sent))
		sent++;
	len = strlen(sent);
	while (len > 0 && isspace((unsigned char) sent[len - 1]))
		len--;
	sent = pnstrdup(sent, len);
	if (strcmp(sent, held) == 0)
		return true;
	if (sent[0] == '\0' || held[0] == '\0')
		return false;
	if (pg_strcasecmp(sent, held) == 0 &&
		(pg_strcasecmp(sent, "true") == 0 || pg_strcasecmp(sent, "false") == 0 ||
		 strcmp(property, "email") == 0 || strcmp(property, "domain") == 0 ||
		 strcmp(property, "website") == 0))
		return true;
	date = strlen(sent) == 10;
	if ((a = canonical_time(sent, date)) != NULL)
		return (b = canonical_time(held, date)) != NULL && strcmp(a, b) == 0;
	if ((a = canonical_decimal(sent)) != NULL)
		return (b = canonical_decimal(held)) != NULL && strcmp(a, b) == 0;
	return false;
}

/* ----------------------------------------------------------------
 * Steps of a run
 * ----------------------------------------------------------------
 */
static void
stop_run(Run *run, int calls, const char *state, const char *detail)
{
	Oid			types[4] = {INT8OID, INT4OID, TEXTOID, TEXTOID};
	Datum		args[4];

	args[0] = Int64GetDatum(run->run_id);
	args[1] = Int32GetDatum(calls);
	args[2] = CStringGetTextDatum(state);
	args[3] = CStringGetTextDatum(detail);
	if (SPI_execute_with_args("SELECT erpcrm._reconcile_stop($1, $2, $3, $4)",
							  4, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._reconcile_stop failed");
}

/*
 * The run the worker works on, while it runs.  erpcrm.unmap() drops a
 * mapping's runs with it, so a run gone when the worker comes back to it
 * ended with its mapping: only the server log can say so.
 */
static int64 current_run_id = 0;
static char current_mapping[NAMEDATALEN];

/*
 * In a step's transaction: where the current run stands.  A run gone is
 * reported; one that ended (done, cancelled, ...) is forgotten.
 */
static void
follow_run(void)
{
	Oid			types[1] = {INT8OID};
	Datum		args[1];

	if (current_run_id == 0)
		return;
	args[0] = Int64GetDatum(current_run_id);
	if (SPI_execute_with_args("SELECT state FROM erpcrm.reconcile_run WHERE run_id = $1",
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading erpcrm.reconcile_run failed");
	if (SPI_processed == 0)
		ereport(LOG,
				(errmsg("erpcrm worker: the reconcile of mapping \"%s\" stopped: the mapping was dropped",
						current_mapping),
				 errdetail("Run %lld was dropped with its mapping; what it found is not kept.",
						   (long long) current_run_id)));
	else
	{
		char	   *state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (strcmp(state, "running") == 0 || strcmp(state, "queued") == 0)
			return;
	}
	current_run_id = 0;
}

/* HubSpot answered with 2xx (a 207 too). */
static bool
answered(const HsResponse *resp)
{
	return resp->transport_error == 0 && resp->status >= 200 && resp->status < 300;
}

/*
 * A call that failed as a whole: HubSpot down, the token refused, the rate
 * limit: the worker backs off as after a delivery batch, and the step is
 * done again.  Another refusal (a 400: the id property is not unique) ends
 * the run with HubSpot's words.  Returns the detail for the latter.
 */
static char *
call_failed(const HsResponse *resp, const char *path, DeliveryOutcome *out)
{
	HsError		err;

	if (out->blocked_until != 0)
		return NULL;
	if (resp->transport_error != 0)
	{
		out->transient = true;
		snprintf(out->transient_message, sizeof(out->transient_message),
				 "reconciling: %s", resp->transport_message);
		return NULL;
	}
	hs_parse_error(resp->body, resp->body_len, &err);
	if (resp->status == 401 || resp->status == 403)
	{
		out->auth_failed = true;
		snprintf(out->auth_message, sizeof(out->auth_message),
				 "HubSpot answered %ld to POST %s: %s", resp->status, path,
				 err.message[0] ? err.message : "no message");
		return NULL;
	}
	if (resp->status >= 500 || resp->status == 429 || resp->status < 200 ||
		(resp->status >= 200 && resp->status < 300))
	{
		out->transient = true;
		snprintf(out->transient_message, sizeof(out->transient_message),
				 "reconciling: POST %s answered %ld", path, resp->status);
		return NULL;
	}
	return psprintf("HubSpot answered %ld to POST %s: %s", resp->status, path,
					err.message[0] ? err.message : "no message");
}

/* Is id one of the ids of list ("1;2;3", as hs_merged_object_ids)? */
static bool
listed(const char *list, const char *id)
{
	size_t		len = strlen(id);

	for (const char *p = list; p != NULL && *p;)
	{
		const char *end = strchr(p, ';');
		size_t		item = end ? (size_t) (end - p) : strlen(p);

		if (item == len && strncmp(p, id, len) == 0)
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

/*
 * Keys whose object erpcrm knows but HubSpot did not find by the id
 * property: read them by HubSpot id.  The same record without the ERP id is
 * one whose id property was changed by hand; another record is the one it
 * was merged into; none is an object deleted (or merged away).
 */
static bool
explain_missing(Batch *calls, MappingDef *m, KeyRow **missing, int n,
				Findings *f, int *ncalls, DeliveryOutcome *out, char **fatal)
{
	HsJsonBody *body = hs_body_new();
	HsResponse	resp;
	const char *props[2];
	char	   *path;
	int			nres;
	char	  **ids;
	char	  **values;
	int			nmerged;
	char	  **mids;
	char	  **merged;

	props[0] = m->id_property;
	props[1] = "hs_merged_object_ids";
	for (int i = 0; i < n; i++)
		hs_body_add_read(body, missing[i]->known_hubspot_id);
	hs_body_set_properties(body, 2, props);
	path = psprintf("%s/%s/batch/read", HS_OBJECTS_PREFIX, m->object_type);
	call_hubspot(calls, "POST", path, hs_body_finish(body), n, &resp);
	(*ncalls)++;
	if (!answered(&resp) ||
		!hs_parse_property(resp.body, resp.body_len, m->id_property, &nres, &ids, &values) ||
		!hs_parse_property(resp.body, resp.body_len, props[1], &nmerged, &mids, &merged))
	{
		*fatal = call_failed(&resp, path, out);
		return false;
	}
	for (int i = 0; i < n; i++)
	{
		KeyRow	   *row = missing[i];
		const char *merged_into = NULL;
		bool		same = false;

		for (int r = 0; r < nres; r++)
		{
			if (strcmp(ids[r], row->known_hubspot_id) == 0)
			{
				found(f, "edited", row->erp_id, row->known_hubspot_id, m->id_property,
					  row->id_value, values[r],
					  "the record lost its ERP id in HubSpot; erpcrm does not repair it, since an upsert would make a second record: set the id property again in HubSpot");
				same = true;
				break;
			}
			/* HubSpot answers a merged-away id with the record it went into */
			if (listed(merged[r], row->known_hubspot_id))
				merged_into = ids[r];
		}
		if (same)
			continue;
		found(f, "missing", row->erp_id, row->known_hubspot_id, NULL, NULL, merged_into,
			  merged_into ?
			  psprintf("merged into HubSpot record %s by hand", merged_into) :
			  "deleted in HubSpot (or merged into a record that does not carry this ERP id)");
	}
	return true;
}

/*
 * Associations of the keys found: read back per association, and every
 * one that erpcrm made (its target is in HubSpot) and that is not there any
 * more is a finding.
 */
static bool
check_associations(Batch *calls, MappingDef *m, KeyRow *rows, char **held_ids,
				   int n, Findings *f, int *ncalls, DeliveryOutcome *out, char **fatal)
{
	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		HsJsonBody *body;
		HsResponse	resp;
		char	   *path;
		int			npairs;
		char	  **from;
		char	  **to;
		int			nin = 0;

		if (def->as_property != NULL)
			continue;			/* compared as a property */
		body = hs_body_new();
		for (int i = 0; i < n; i++)
			if (held_ids[i] != NULL && rows[i].assoc_to[a] != NULL &&
				rows[i].assoc_to[a][0] != '\0')
			{
				hs_body_add_read(body, held_ids[i]);
				nin++;
			}
		if (nin == 0)
			continue;
		path = psprintf("%s/%s/%s/batch/read", HS_ASSOCIATIONS_PREFIX,
						m->object_type, def->target_type);
		call_hubspot(calls, "POST", path, hs_body_finish(body), nin, &resp);
		(*ncalls)++;
		if (!answered(&resp) ||
			!hs_parse_association_reads(resp.body, resp.body_len, &npairs, &from, &to))
		{
			*fatal = call_failed(&resp, path, out);
			return false;
		}
		for (int i = 0; i < n; i++)
		{
			const char *want = rows[i].assoc_to[a];
			bool		there = false;
			StringInfoData now;

			if (held_ids[i] == NULL || want == NULL || want[0] == '\0')
				continue;
			initStringInfo(&now);
			for (int p = 0; p < npairs; p++)
				if (strcmp(from[p], held_ids[i]) == 0)
				{
					if (strcmp(to[p], want) == 0)
						there = true;
					appendStringInfo(&now, "%s%s", now.len ? "," : "", to[p]);
				}
			if (!there)
				found(f, "association_removed", rows[i].erp_id, held_ids[i], def->column,
					  rows[i].assoc_key[a], now.len ? now.data : NULL,
					  psprintf("not associated to %s \"%s\" (HubSpot record %s) any more",
							   def->target_name, rows[i].assoc_key[a], want));
		}
	}
	return true;
}

/*
 * The objects phase: one batch of keys.  Returns false when HubSpot stopped
 * the step (out says why); the step is then done again later.
 */
static void
objects_step(Run *run, MappingDef *m, DeliveryOutcome *out, MemoryContext cxt)
{
	Oid			types[2] = {INT8OID, INT4OID};
	Datum		args[2];
	int			n;
	KeyRow	   *rows;
	List	   *seqs = NIL;
	List	   *erp_ids = NIL;
	int			nprops = 0;
	char	  **names = NULL;
	int			need = 2;
	Batch *calls;
	int			ncalls = 0;
	Findings	f;
	char	   *fatal = NULL;
	char	  **held_ids;
	bool		ok = true;
	char	   *last;

	memset(&f, 0, sizeof(f));
	for (int a = 0; a < m->nassoc; a++)
		if (m->assoc[a].as_property == NULL)
			need++;

	/* 1. the keys and their rows */
	erpcrm_begin_step("erpcrm: reconcile, reading keys");
	args[0] = Int64GetDatum(run->run_id);
	args[1] = Int32GetDatum(HS_MAX_BATCH);
	if (SPI_execute_with_args("SELECT erp_id, hubspot_id, change_seq FROM erpcrm._reconcile_keys($1, $2)",
							  2, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "erpcrm._reconcile_keys failed");
	n = (int) SPI_processed;
	MemoryContextSwitchTo(cxt);
	rows = palloc0(sizeof(KeyRow) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		int64	   *seq = palloc(sizeof(int64));

		rows[i].erp_id = SPI_getvalue(t, d, 1);
		rows[i].known_hubspot_id = SPI_getvalue(t, d, 2);
		*seq = DatumGetInt64(SPI_getbinval(t, d, 3, &isnull));
		seqs = lappend(seqs, seq);
		erp_ids = lappend(erp_ids, rows[i].erp_id);
	}
	if (n > 0 && run->calls + need > run->budget)
	{
		stop_run(run, 0, "budget_spent",
				 psprintf("the budget of %d calls is spent after %lld keys; the next run of the mapping goes on after key \"%s\"",
						  run->budget, (long long) run->keys_checked, run->cursor));
		erpcrm_end_step();
		return;
	}
	if (n > 0)
		read_key_rows(m, n, rows, &nprops, &names);
	erpcrm_end_step();

	/* 2. HubSpot, with no transaction open */
	calls = calls_of(m, out);
	held_ids = palloc0(sizeof(char *) * Max(n, 1));
	if (n > 0)
	{
		HsJsonBody *body = hs_body_new();
		HsResponse	resp;
		char	   *path = psprintf("%s/%s/batch/read", HS_OBJECTS_PREFIX, m->object_type);
		int			nin = 0;
		int			nres = 0;
		char	  **res_ids = NULL;
		char	  **res_keys = NULL;
		int		   *res_of = palloc(sizeof(int) * n);
		KeyRow	  **missing = palloc(sizeof(KeyRow *) * n);
		int			nmissing = 0;
		int			owner_prop = -1;
		bool		inherit = false;
		char	   *json;

		for (int i = 0; i < n; i++)
			if (rows[i].sendable)
			{
				hs_body_add_read(body, rows[i].id_value);
				nin++;
			}
		for (int p = 0; p < nprops; p++)
			if (strcmp(names[p], "hubspot_owner_id") == 0)
				owner_prop = p;
		for (int a = 0; a < m->nassoc; a++)
			inherit |= m->assoc[a].inherit_owner;
		hs_body_set_properties(body, nprops, (const char *const *) names);
		hs_body_set_id_property(body, m->id_property);
		json = hs_body_finish(body);
		if (nin > 0)
		{
			call_hubspot(calls, "POST", path, json, nin, &resp);
			ncalls++;
			if (!answered(&resp) ||
				!hs_parse_property(resp.body, resp.body_len, m->id_property, &nres, &res_ids, &res_keys))
			{
				fatal = call_failed(&resp, path, out);
				ok = false;
			}
		}
		for (int i = 0; ok && i < n; i++)
		{
			res_of[i] = -1;
			if (!rows[i].sendable)
				continue;
			for (int r = 0; r < nres; r++)
				if (res_keys[r] != NULL && strcmp(res_keys[r], rows[i].id_value) == 0)
					res_of[i] = r;
			if (res_of[i] < 0)
				missing[nmissing++] = &rows[i];
			else
				held_ids[i] = res_ids[res_of[i]];
		}
		/* properties, one at a time */
		for (int p = 0; ok && nres > 0 && p < nprops; p++)
		{
			int			nv;
			char	  **vids;
			char	  **vals;

			if (strcmp(names[p], m->id_property) == 0)
				continue;
			if (!hs_parse_property(resp.body, resp.body_len, names[p], &nv, &vids, &vals))
				continue;
			for (int i = 0; i < n; i++)
			{
				const char *sent;
				const char *held;

				if (res_of[i] < 0)
					continue;
				sent = rows[i].values[p];
				held = vals[res_of[i]];
				/* an empty owner is taken from an associated record */
				if (p == owner_prop && inherit && sent[0] == '\0')
					continue;
				if (!same_value(names[p], sent, held))
					found(&f, "edited", rows[i].erp_id, held_ids[i], names[p], sent,
						  held ? held : "", "changed in HubSpot since erpcrm wrote it");
			}
		}
		/* the ERP id on another record than the one erpcrm made */
		for (int i = 0; ok && i < n; i++)
			if (held_ids[i] != NULL && strcmp(held_ids[i], rows[i].known_hubspot_id) != 0)
				found(&f, "edited", rows[i].erp_id, held_ids[i], "hs_object_id",
					  rows[i].known_hubspot_id, held_ids[i],
					  "the ERP id is on another HubSpot record now (merged, or deleted and made again by hand)");
		if (ok && nmissing > 0)
		{
			if (run->calls + ncalls + 1 > run->budget)
				ok = false;		/* cannot happen: the step's need was checked */
			else
				ok = explain_missing(calls, m, missing, nmissing, &f, &ncalls, out, &fatal);
		}
		if (ok)
			ok = check_associations(calls, m, rows, held_ids, n, &f, &ncalls, out, &fatal);
	}

	/* 3. the findings and the calls */
	erpcrm_begin_step("erpcrm: reconcile, recording");
	MemoryContextSwitchTo(cxt);
	record_calls(calls);
	last = n == HS_MAX_BATCH ? rows[n - 1].erp_id : NULL;
	if (!ok)
	{
		/* nothing learnt: only the calls count */
		erp_ids = NIL;
		seqs = NIL;
		f.kinds = NIL;
		memset(&f, 0, sizeof(f));
		last = run->cursor;
	}
	{
		Oid			rtypes[12] = {INT8OID, INT4OID, TEXTARRAYOID, INT8ARRAYOID, TEXTOID,
			TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID};
		Datum		rargs[12];
		char		rnulls[12] = "            ";

		rargs[0] = Int64GetDatum(run->run_id);
		rargs[1] = Int32GetDatum(ncalls);
		rargs[2] = text_array(erp_ids);
		rargs[3] = int8_array(seqs);
		rargs[4] = last ? CStringGetTextDatum(last) : (Datum) 0;
		rnulls[4] = last ? ' ' : 'n';
		rargs[5] = text_array(f.kinds);
		rargs[6] = text_array(f.keys);
		rargs[7] = text_array(f.hubspot_ids);
		rargs[8] = text_array(f.properties);
		rargs[9] = text_array(f.erp_values);
		rargs[10] = text_array(f.hubspot_values);
		rargs[11] = text_array(f.details);
		if (SPI_execute_with_args("SELECT erpcrm._reconcile_checked($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
								  12, rtypes, rargs, rnulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._reconcile_checked failed");
	}
	if (fatal != NULL)
		stop_run(run, 0, "failed", fatal);
	follow_run();
	erpcrm_end_step();
}

/*
 * The unknown phase: one page of the records that carry the id property.
 */
static void
unknown_step(Run *run, MappingDef *m, DeliveryOutcome *out, MemoryContext cxt)
{
	Batch *calls;
	HsResponse	resp;
	char	   *path;
	int			nres = 0;
	char	  **ids = NULL;
	char	  **keys = NULL;
	bool		ok;
	char	   *fatal = NULL;
	List	   *stranger_ids = NIL;
	List	   *stranger_keys = NIL;
	char	   *last = NULL;
	long		gap;

	erpcrm_begin_step("erpcrm: reconcile, checking the budget");
	MemoryContextSwitchTo(cxt);
	if (strcmp(m->id_property, "erp_id") != 0)
	{
		/*
		 * The records' ids are values of another view column, which says
		 * nothing of the keys erpcrm knows: no search.
		 */
		Oid			types[6] = {INT8OID, INT4OID, INT4OID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID};
		Datum		args[6];
		char		nulls[6] = "   n  ";

		args[0] = Int64GetDatum(run->run_id);
		args[1] = Int32GetDatum(0);
		args[2] = Int32GetDatum(0);
		args[3] = (Datum) 0;
		args[4] = text_array(NIL);
		args[5] = text_array(NIL);
		if (SPI_execute_with_args("SELECT erpcrm._reconcile_scanned($1, $2, $3, $4, $5, $6)",
								  6, types, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._reconcile_scanned failed");
		erpcrm_end_step();
		return;
	}
	if (run->calls + 1 > run->budget)
	{
		stop_run(run, 0, "budget_spent",
				 psprintf("the budget of %d calls is spent while looking for unknown ERP ids, after HubSpot record %s; the next run of the mapping goes on from there",
						  run->budget, run->search_after));
		erpcrm_end_step();
		return;
	}
	erpcrm_end_step();

	/* HubSpot's search has a lower rate limit of its own */
	gap = hs_rate_search_slot(GetCurrentTimestamp());
	if (gap > 0)
		erpcrm_worker_sleep(gap, PG_WAIT_EXTENSION);
	calls = calls_of(m, out);
	path = psprintf("%s/%s/search", HS_OBJECTS_PREFIX, m->object_type);
	call_hubspot(calls, "POST", path,
					  hs_search_having_body(m->id_property, run->search_after,
											RECONCILE_SEARCH_PAGE),
					  0, &resp);
	ok = answered(&resp) &&
		hs_parse_property(resp.body, resp.body_len, m->id_property, &nres, &ids, &keys);
	if (!ok)
		fatal = call_failed(&resp, path, out);

	erpcrm_begin_step("erpcrm: reconcile, recording");
	MemoryContextSwitchTo(cxt);
	record_calls(calls);
	if (ok)
	{
		List	   *all = NIL;
		Oid			types[2] = {INT8OID, TEXTARRAYOID};
		Datum		args[2];
		int			nstrangers;
		KeyRow	   *rows;
		int			nprops;
		char	  **names;

		for (int r = 0; r < nres; r++)
			if (keys[r] != NULL && keys[r][0] != '\0')
				all = lappend(all, keys[r]);
		args[0] = Int64GetDatum(run->run_id);
		args[1] = text_array(all);
		if (SPI_execute_with_args("SELECT k FROM erpcrm._reconcile_strangers($1, $2) AS k",
								  2, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._reconcile_strangers failed");
		nstrangers = (int) SPI_processed;
		MemoryContextSwitchTo(cxt);
		rows = palloc0(sizeof(KeyRow) * Max(nstrangers, 1));
		for (int i = 0; i < nstrangers; i++)
			rows[i].erp_id = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		/* a row of the view that was never sent is known to the ERP */
		if (nstrangers > 0)
			read_key_rows(m, nstrangers, rows, &nprops, &names);
		for (int i = 0; i < nstrangers; i++)
		{
			if (rows[i].in_view)
				continue;
			for (int r = 0; r < nres; r++)
				if (keys[r] != NULL && strcmp(keys[r], rows[i].erp_id) == 0)
				{
					stranger_ids = lappend(stranger_ids, ids[r]);
					stranger_keys = lappend(stranger_keys, keys[r]);
				}
		}
		if (nres == RECONCILE_SEARCH_PAGE)
			last = ids[nres - 1];
	}
	else
		last = run->search_after;	/* nothing learnt: only the call counts */
	{
		Oid			types[6] = {INT8OID, INT4OID, INT4OID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID};
		Datum		args[6];
		char		nulls[6] = "      ";

		args[0] = Int64GetDatum(run->run_id);
		args[1] = Int32GetDatum(1);
		args[2] = Int32GetDatum(ok ? nres : 0);
		args[3] = last ? CStringGetTextDatum(last) : (Datum) 0;
		nulls[3] = last ? ' ' : 'n';
		args[4] = text_array(stranger_ids);
		args[5] = text_array(stranger_keys);
		if (SPI_execute_with_args("SELECT erpcrm._reconcile_scanned($1, $2, $3, $4, $5, $6)",
								  6, types, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._reconcile_scanned failed");
	}
	if (fatal != NULL)
		stop_run(run, 0, "failed", fatal);
	follow_run();
	erpcrm_end_step();
}

/*
 * One step of the oldest reconcile run, if there is one (SQL 1.3).  The
 * worker calls it when no key is due; out tells it, as after a delivery
 * batch, when HubSpot wants it to back off.
 */
bool
erpcrm_reconcile_work(List *mappings, DeliveryOutcome *out)
{
	static MemoryContext cxt = NULL;
	MemoryContext caller = CurrentMemoryContext;
	Run			run;
	MappingDef *m = NULL;
	ListCell   *lc;
	bool		have;
	bool		stopped = false;

	memset(out, 0, sizeof(*out));
	if (cxt == NULL)
		cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm reconcile",
									ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(cxt);

	erpcrm_begin_step("erpcrm: reconcile, next run");
	have = SPI_execute("SELECT FROM pg_catalog.pg_proc WHERE proname = '_reconcile_next'"
					   " AND pronamespace = 'erpcrm'::pg_catalog.regnamespace",
					   true, 1) == SPI_OK_SELECT && SPI_processed == 1;
	if (have)
	{
		if (SPI_execute("SELECT run_id, mapping_id, repair, budget, calls, phase = 'unknown',"
						" cursor, search_after, keys_checked FROM erpcrm._reconcile_next()",
						false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._reconcile_next failed");
		have = SPI_processed == 1;
	}
	if (have)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;

		MemoryContextSwitchTo(cxt);
		run.run_id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		run.mapping_id = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		run.repair = DatumGetBool(SPI_getbinval(t, d, 3, &isnull));
		run.budget = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		run.calls = DatumGetInt32(SPI_getbinval(t, d, 5, &isnull));
		run.unknown_phase = DatumGetBool(SPI_getbinval(t, d, 6, &isnull));
		run.cursor = SPI_getvalue(t, d, 7);
		run.search_after = SPI_getvalue(t, d, 8);
		run.keys_checked = DatumGetInt64(SPI_getbinval(t, d, 9, &isnull));
		foreach(lc, mappings)
			if (((MappingDef *) lfirst(lc))->id == run.mapping_id)
				m = lfirst(lc);
	}
	/* the run of the last step is not the next one: has it ended? */
	if (current_run_id != 0 && (!have || run.run_id != current_run_id))
		follow_run();
	if (have && (m == NULL || m->erp_id_type == NULL))
	{
		stop_run(&run, 0, "failed",
				 "the view of the mapping cannot be read (see erpcrm.status.problem)");
		have = false;
		stopped = true;
	}
	else if (have)
	{
		current_run_id = run.run_id;
		strlcpy(current_mapping, m->name, sizeof(current_mapping));
	}
	erpcrm_end_step();
	if (!have)
		return stopped;
	MemoryContextSwitchTo(cxt);
	if (run.unknown_phase)
		unknown_step(&run, m, out, cxt);
	else
		objects_step(&run, m, out, cxt);
	MemoryContextSwitchTo(caller);
	MemoryContextReset(cxt);
	return true;
}
