/*-------------------------------------------------------------------------
 *
 * setup.c
 *	  HubSpot from the SQL session, for the DBA: erpcrm.check_connection()
 *	  says in plain words whether the token, its scopes, the portal and the
 *	  rate limits are right; erpcrm.setup_hubspot() prepares a portal for the
 *	  mappings.  Idempotent: what exists is reported as existing, never
 *	  created twice.
 *
 *	  - a property group "erpcrm" per object type of the mappings;
 *	  - the unique property each mapping upserts by (hasUniqueValue);
 *	  - every property a mapping view has and HubSpot lacks, typed from the
 *		column's type;
 *	  - the invoice pipeline with its stages, and the order pipeline when
 *		native orders are mapped, found by label or created; their stage
 *		ids are recorded in erpcrm.pipeline_stage for mapping views
 *		(erpcrm.stage_id()).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "client.h"
#include "erpcrm.h"
#include "hubspot.h"

#define ERPCRM_GROUP "erpcrm"

typedef struct SetupContext
{
	Tuplestorestate *store;
	TupleDesc	desc;
} SetupContext;

static void
report(SetupContext *cxt, const char *object_type, const char *kind,
	   const char *name, const char *result)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(object_type);
	values[1] = CStringGetTextDatum(kind);
	values[2] = CStringGetTextDatum(name);
	values[3] = CStringGetTextDatum(result);
	tuplestore_putvalues(cxt->store, cxt->desc, values, nulls);
}

/* "created", "exists" or the error HubSpot gave. */
static char *
creation_result(HsResponse *resp)
{
	HsError		err;

	if (resp->transport_error != 0)
		return psprintf("error: no answer from HubSpot: %s", resp->transport_message);
	if (resp->status == 200 || resp->status == 201)
		return "created";
	if (resp->status == 409)
		return "exists";
	hs_parse_error(resp->body, resp->body_len, &err);
	return psprintf("error: %ld %s %s", resp->status, err.category, err.message);
}

/*
 * Every call a session makes is counted by the worker's rate limiter (HubSpot
 * counts it against the same budget) and lands in erpcrm.api_log, with no
 * mapping, in the session's transaction.
 */
static TimestampTz session_call_started = 0;

static void
session_call_hook(const char *method, const char *path, const HsResponse *resp)
{
	Datum		args[10];
	char		nulls[10] = "          ";
	Oid			types[10] = {TIMESTAMPTZOID, TEXTOID, TEXTOID, INT4OID, FLOAT8OID,
	INT4OID, TEXTOID, TEXTOID, INT4OID, INTERVALOID};
	Interval   *retention;
	HsError		err;

	if (resp == NULL)
	{
		session_call_started = GetCurrentTimestamp();
		erpcrm_note_session_call(session_call_started);
		return;
	}

	retention = palloc0(sizeof(Interval));
	retention->time = (int64) erpcrm_api_log_retention_min * 60 * USECS_PER_SEC;
	args[0] = TimestampTzGetDatum(session_call_started);
	args[1] = CStringGetTextDatum(method);
	args[2] = CStringGetTextDatum(path);
	args[3] = Int32GetDatum((int32) resp->status);
	nulls[3] = (resp->transport_error != 0 || resp->status == 0) ? 'n' : ' ';
	args[4] = Float8GetDatum(resp->elapsed_ms);
	args[5] = Int32GetDatum(0);
	nulls[6] = 'n';
	if (resp->transport_error == 0 && resp->status >= 400)
	{
		hs_parse_error(resp->body, resp->body_len, &err);
		if (err.category[0] != '\0')
		{
			args[6] = CStringGetTextDatum(err.category);
			nulls[6] = ' ';
		}
	}
	args[7] = resp->correlation_id[0] ? CStringGetTextDatum(resp->correlation_id) : (Datum) 0;
	nulls[7] = resp->correlation_id[0] ? ' ' : 'n';
	nulls[8] = 'n';
	args[9] = IntervalPGetDatum(retention);

	SPI_connect();
	/* this session's own call: erpcrm._check_worker() lets it be logged */
	erpcrm_logging_own_call = true;
	PG_TRY();
	{
		if (SPI_execute_with_args("SELECT erpcrm._log_call($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
								  10, types, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "erpcrm._log_call failed");
	}
	PG_FINALLY();
	{
		erpcrm_logging_own_call = false;
	}
	PG_END_TRY();
	SPI_finish();
}

/* Configure this session's HTTP client; returns the token ("" if none). */
static char *
configure_client(void)
{
	static bool initialized = false;
	char	   *token = erpcrm_read_token();

	if (!initialized)
	{
		hs_http_init();
		hs_call_hook = session_call_hook;
		initialized = true;
	}
	erpcrm_configure_http(token);
	return token;
}

static void
connect_client(void)
{
	char	   *token = configure_client();

	if (token[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no HubSpot access token is configured"),
				 errhint("Set erpcrm.token_file (or erpcrm.token) in postgresql.conf and reload.")));
	explicit_bzero(token, strlen(token));
}

/* A call that must answer for set-up to go on. */
static void
must_answer(HsResponse *resp, const char *what)
{
	if (resp->aborted)
		CHECK_FOR_INTERRUPTS();
	if (resp->transport_error != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not reach HubSpot to %s", what),
				 errdetail("%s", resp->transport_message),
				 errhint("Check erpcrm.hubspot_url and the network.")));
	if (resp->status == 401 || resp->status == 403)
	{
		HsError		err;

		hs_parse_error(resp->body, resp->body_len, &err);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("HubSpot refused the access token (%ld %s)", resp->status, err.category),
				 errdetail("%s", err.message),
				 errhint("The private app needs the crm.schemas.*.write scopes of the mapped object types.")));
	}
}

/* HubSpot property type and field type for a column type. */
static void
property_type(Oid typid, char typcategory, const char **type, const char **field)
{
	if (typid == BOOLOID)
	{
		*type = "bool";
		*field = "booleancheckbox";
	}
	else if (typid == DATEOID)
	{
		*type = "date";
		*field = "date";
	}
	else if (typid == TIMESTAMPOID || typid == TIMESTAMPTZOID)
	{
		*type = "datetime";
		*field = "date";
	}
	else if (typcategory == 'N')
	{
		*type = "number";
		*field = "number";
	}
	else
	{
		*type = "string";
		*field = "text";
	}
}

static void
setup_properties(SetupContext *cxt)
{
	char	   *last_type = NULL;
	int			nexisting = 0;
	char	  **existing = NULL;
	uint64		nrows;
	SPITupleTable *tuptable;

	if (SPI_execute("SELECT m.object_type, m.id_property, a.attname::text, a.atttypid,"
					"       t.typcategory::text"
					"  FROM erpcrm.mapping m"
					"  JOIN pg_catalog.pg_attribute a ON a.attrelid = m.source"
					"   AND a.attnum > 0 AND NOT a.attisdropped"
					"  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
					" WHERE a.attname <> 'hubspot_id'"
					"   AND NOT EXISTS (SELECT FROM erpcrm.association x"
					"                    WHERE x.mapping_id = m.mapping_id AND x.column_name = a.attname)"
					" ORDER BY m.object_type, a.attname, m.id_property = a.attname DESC",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the mappings");
	nrows = SPI_processed;
	tuptable = SPI_tuptable;

	for (uint64 i = 0; i < nrows; i++)
	{
		HeapTuple	t = tuptable->vals[i];
		TupleDesc	d = tuptable->tupdesc;
		char	   *object_type = SPI_getvalue(t, d, 1);
		char	   *id_property = SPI_getvalue(t, d, 2);
		char	   *column = SPI_getvalue(t, d, 3);
		bool		isnull;
		Oid			typid = DatumGetObjectId(SPI_getbinval(t, d, 4, &isnull));
		char	   *category = SPI_getvalue(t, d, 5);
		bool		unique = strcmp(column, id_property) == 0;
		bool		known = false;
		const char *type;
		const char *field;
		HsResponse	resp;
		char	   *path;

		/* same column twice (two mappings of one type): once is enough */
		if (i > 0 && last_type && strcmp(last_type, object_type) == 0 &&
			strcmp(SPI_getvalue(tuptable->vals[i - 1], d, 3), column) == 0)
			continue;

		if (last_type == NULL || strcmp(last_type, object_type) != 0)
		{
			/* a new object type: its properties, and the group */
			last_type = object_type;
			path = psprintf("%s/%s", HS_PROPERTIES_PREFIX, object_type);
			hs_http_request("GET", path, NULL, &resp);
			must_answer(&resp, "read its properties");
			if (resp.status != 200 ||
				!hs_parse_names(resp.body, resp.body_len, "name", &nexisting, &existing))
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("HubSpot's list of %s properties could not be read (%ld)",
								object_type, resp.status)));
			path = psprintf("%s/%s/groups", HS_PROPERTIES_PREFIX, object_type);
			hs_http_request("POST", path, hs_group_body(ERPCRM_GROUP, "ERP (erpcrm)"), &resp);
			must_answer(&resp, "create a property group");
			report(cxt, object_type, "property group", ERPCRM_GROUP, creation_result(&resp));
		}

		for (int k = 0; k < nexisting; k++)
			if (strcmp(existing[k], column) == 0)
				known = true;
		if (known && unique)
		{
			/* upserts need unique values; HubSpot cannot add them later */
			const char *fields[1] = {"hasUniqueValue"};
			char	   *v[1];

			path = psprintf("%s/%s/%s", HS_PROPERTIES_PREFIX, object_type, column);
			hs_http_request("GET", path, NULL, &resp);
			must_answer(&resp, "read a property");
			if (resp.status == 200 &&
				hs_parse_fields(resp.body, resp.body_len, 1, fields, v) &&
				v[0] != NULL && strcmp(v[0], "false") == 0)
			{
				report(cxt, object_type, "unique property", column,
					   psprintf("error: the property exists in HubSpot without unique values "
								"(hasUniqueValue false), so upserts by it fail, and HubSpot "
								"cannot make an existing property unique; give the mappings of "
								"%s another id_property (erpcrm.map(..., id_property => ...), a "
								"view column), then run setup_hubspot() again to create it unique",
								object_type));
				continue;
			}
		}
		if (known)
		{
			report(cxt, object_type, unique ? "unique property" : "property", column, "exists");
			continue;
		}
		property_type(typid, category[0], &type, &field);
		if (unique)
		{
			type = "string";
			field = "text";
		}
		path = psprintf("%s/%s", HS_PROPERTIES_PREFIX, object_type);
		hs_http_request("POST", path,
						hs_property_body(column, column, type, field, ERPCRM_GROUP, unique),
						&resp);
		must_answer(&resp, "create a property");
		report(cxt, object_type, unique ? "unique property" : "property", column,
			   creation_result(&resp));
	}
}

/*
 * A pipeline of deals (the invoice pipeline) or of orders (object_type as
 * the orders mapping spells it: orders or 0-123), found by its label or
 * created with these stages; its stage ids go into erpcrm.pipeline_stage.
 */
static void
setup_pipeline(SetupContext *cxt, const char *object_type, const char *label,
			   ArrayType *stages_a, ArrayType *won_a, ArrayType *lost_a)
{
	bool		deals = strcmp(object_type, "deals") == 0;
	const char *noun = deals ? "deal" : "order";
	const char *kind = deals ? "deals" : "orders";
	Datum	   *stages;
	bool	   *snulls;
	int			nstages;
	Datum	   *won;
	int			nwon;
	Datum	   *lost;
	int			nlost;
	HsResponse	resp;
	char	   *path = psprintf("%s/%s", HS_PIPELINES_PREFIX, object_type);
	char	   *id;
	int			nfound;
	char	  **labels;
	char	  **ids;
	bool		created = false;
	Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, TEXTOID};

	deconstruct_array(stages_a, TEXTOID, -1, false, TYPALIGN_INT, &stages, &snulls, &nstages);
	deconstruct_array(won_a, TEXTOID, -1, false, TYPALIGN_INT, &won, NULL, &nwon);
	deconstruct_array(lost_a, TEXTOID, -1, false, TYPALIGN_INT, &lost, NULL, &nlost);
	if (nstages == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the pipeline \"%s\" needs at least one stage", label)));

	/* erpcrm.stage_id() finds a stage by pipeline label: one label, one kind */
	if (SPI_execute_with_args("SELECT FROM erpcrm.pipeline_stage WHERE pipeline = $1 AND object_type <> $2",
							  2, types, (Datum[]) {CStringGetTextDatum(label), CStringGetTextDatum(kind)},
							  NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read erpcrm.pipeline_stage");
	if (SPI_processed > 0)
	{
		report(cxt, kind, "pipeline", label,
			   psprintf("error: \"%s\" already names a pipeline of %s in erpcrm.pipeline_stage, "
						"and erpcrm.stage_id() finds stages by pipeline label; give the %s "
						"pipeline another label", label, deals ? "orders" : "deals", noun));
		return;
	}

	hs_http_request("GET", path, NULL, &resp);
	must_answer(&resp, psprintf("read its %s pipelines", noun));
	if (resp.status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("HubSpot's %s pipelines could not be read (%ld)", noun, resp.status)));
	if (!hs_parse_pipeline(resp.body, resp.body_len, label, &id, &nfound, &labels, &ids))
	{
		const char **names = palloc(sizeof(char *) * nstages);
		const char **probs = deals ? palloc(sizeof(char *) * nstages) : NULL;
		long		limit;
		long		usage;

		/* free portals have one pipeline per object: say so instead of trying */
		hs_http_request("GET", HS_PIPELINE_LIMITS_PATH, NULL, &resp);
		must_answer(&resp, "read its pipeline limits");
		if (resp.status == 200 &&
			hs_parse_pipeline_limit(resp.body, resp.body_len, deals ? "0-3" : "0-123",
									&limit, &usage) &&
			limit >= 0 && usage >= limit)
		{
			report(cxt, kind, "pipeline", label,
				   deals ?
				   psprintf("error: the portal has %ld of the %ld deal pipelines its subscription allows "
							"(HubSpot Free allows one), so none was created; upgrade the portal, "
							"or run setup_hubspot(pipeline => NULL) and give the invoices an "
							"existing pipeline in the view", usage, limit) :
				   psprintf("error: the portal has %ld of the %ld order pipelines its subscription allows, "
							"so none was created; upgrade the portal, or name the portal's own order "
							"pipeline and its stages (setup_hubspot(order_pipeline => 'Order Pipeline', "
							"order_stages => ...))", usage, limit));
			return;
		}

		for (int i = 0; i < nstages; i++)
		{
			names[i] = snulls[i] ? "" : TextDatumGetCString(stages[i]);
			if (!deals)
				continue;
			probs[i] = "0.5";
			for (int w = 0; w < nwon; w++)
				if (strcmp(names[i], TextDatumGetCString(won[w])) == 0)
					probs[i] = "1.0";
			for (int l = 0; l < nlost; l++)
				if (strcmp(names[i], TextDatumGetCString(lost[l])) == 0)
					probs[i] = "0.0";
		}
		hs_http_request("POST", path, hs_pipeline_body(label, nstages, names, probs), &resp);
		must_answer(&resp, "create the pipeline");
		if ((resp.status != 200 && resp.status != 201) ||
			!hs_parse_pipeline(resp.body, resp.body_len, label, &id, &nfound, &labels, &ids))
		{
			report(cxt, kind, "pipeline", label, creation_result(&resp));
			return;
		}
		created = true;
	}
	report(cxt, kind, "pipeline", label, created ? "created" : "exists");

	if (SPI_execute_with_args("DELETE FROM erpcrm.pipeline_stage WHERE pipeline = $1",
							  1, types, (Datum[]) {CStringGetTextDatum(label)}, NULL,
							  false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not clear erpcrm.pipeline_stage");
	for (int i = 0; i < nstages; i++)
	{
		char	   *want = snulls[i] ? "" : TextDatumGetCString(stages[i]);
		bool		found = false;

		for (int k = 0; k < nfound; k++)
		{
			Datum		args[6];

			if (strcmp(labels[k], want) != 0)
				continue;
			args[0] = CStringGetTextDatum(label);
			args[1] = CStringGetTextDatum(want);
			args[2] = CStringGetTextDatum(id);
			args[3] = CStringGetTextDatum(ids[k]);
			args[4] = Int32GetDatum(i);
			args[5] = CStringGetTextDatum(kind);
			if (SPI_execute_with_args("INSERT INTO erpcrm.pipeline_stage"
									  " (pipeline, stage, pipeline_id, stage_id, display_order, object_type)"
									  " VALUES ($1, $2, $3, $4, $5, $6)",
									  6, types, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not record a pipeline stage");
			found = true;
			break;
		}
		report(cxt, kind, "pipeline stage", want,
			   found ? (created ? "created" : "exists") : "missing in HubSpot: add it to the pipeline by hand");
	}
}

/* How the mappings spell native orders (orders or 0-123), or NULL. */
static char *
mapped_order_type(void)
{
	if (SPI_execute("SELECT min(object_type) FROM erpcrm.mapping WHERE object_type IN ('orders', '0-123')",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the mappings");
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

PG_FUNCTION_INFO_V1(erpcrm_setup_hubspot_v1);
Datum
erpcrm_setup_hubspot_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SetupContext cxt;
	ArrayType  *empty = construct_empty_array(TEXTOID);
	char	   *order_type;

	InitMaterializedSRF(fcinfo, 0);
	cxt.store = rsinfo->setResult;
	cxt.desc = rsinfo->setDesc;

	connect_client();
	SPI_connect();
	setup_properties(&cxt);
	if (!PG_ARGISNULL(0))
		setup_pipeline(&cxt, "deals", text_to_cstring(PG_GETARG_TEXT_PP(0)),
					   PG_ARGISNULL(1) ? empty : PG_GETARG_ARRAYTYPE_P(1),
					   PG_ARGISNULL(2) ? empty : PG_GETARG_ARRAYTYPE_P(2),
					   PG_ARGISNULL(3) ? empty : PG_GETARG_ARRAYTYPE_P(3));
	/* the order pipeline, when a mapping sends native orders */
	if (PG_NARGS() > 4 && !PG_ARGISNULL(4) && (order_type = mapped_order_type()) != NULL)
		setup_pipeline(&cxt, order_type, text_to_cstring(PG_GETARG_TEXT_PP(4)),
					   PG_ARGISNULL(5) ? empty : PG_GETARG_ARRAYTYPE_P(5), empty, empty);
	SPI_finish();
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * erpcrm.check_connection()
 * ----------------------------------------------------------------
 */
static void
check_row(SetupContext *cxt, const char *check, bool ok, const char *detail)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(check);
	values[1] = BoolGetDatum(ok);
	values[2] = CStringGetTextDatum(detail);
	tuplestore_putvalues(cxt->store, cxt->desc, values, nulls);
}

static bool
has_scope(int nscopes, char **scopes, const char *scope)
{
	for (int k = 0; k < nscopes; k++)
		if (strcmp(scopes[k], scope) == 0)
			return true;
	return false;
}

/* crm.objects.products.write and crm.objects.line_items.write, per mapping */
static void
check_granular_scopes(SetupContext *cxt, int nscopes, char **scopes)
{
	if (SPI_execute("SELECT 'crm.objects.' || object_type || '.write', string_agg(name, ', ' ORDER BY name)"
					"  FROM erpcrm.mapping WHERE object_type IN ('products', 'line_items')"
					" GROUP BY object_type ORDER BY 1",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the mappings");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *need = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *names = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		bool		have = has_scope(nscopes, scopes, need);

		check_row(cxt, psprintf("scope %s", need), have,
				  have ? psprintf("granted; mappings %s need it", names) :
				  psprintf("missing: mappings %s need it (or the legacy e-commerce scope); add it to the private app",
						   names));
	}
}

PG_FUNCTION_INFO_V1(erpcrm_check_connection_v1);
Datum
erpcrm_check_connection_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SetupContext cxt;
	char	   *token;
	HsResponse	resp;
	HsError		err;
	int			nscopes = 0;
	char	  **scopes = NULL;
	ErpcrmPortalConfig portal;

	InitMaterializedSRF(fcinfo, 0);
	cxt.store = rsinfo->setResult;
	cxt.desc = rsinfo->setDesc;

	erpcrm_portal_config(&portal);
	token = configure_client();
	if (token[0] == '\0')
	{
		check_row(&cxt, "token", false,
				  "no access token: set erpcrm.token_file (or erpcrm.token) and reload");
		return (Datum) 0;
	}
	check_row(&cxt, "token", true, erpcrm_token_source());

	/* the portal, with the token */
	hs_http_request("GET", "/account-info/v3/details", NULL, &resp);
	if (resp.aborted)
		CHECK_FOR_INTERRUPTS();
	if (resp.transport_error != 0)
	{
		check_row(&cxt, "connection", false,
				  psprintf("cannot reach %s: %s", portal.hubspot_url, resp.transport_message));
		explicit_bzero(token, strlen(token));
		return (Datum) 0;
	}
	check_row(&cxt, "connection", true, psprintf("%s answers", portal.hubspot_url));
	/* the API family this database's worker and sessions call */
	check_row(&cxt, "api version", true,
			  psprintf("%s (%s)",
					   strcmp(portal.api_version, "v3") == 0 || portal.api_version[0] == '\0' ?
					   "v3: /crm/v3, /crm/v4" :
					   psprintf("%s: /crm/objects/%s, /crm/associations/%s, ...",
								portal.api_version, portal.api_version, portal.api_version),
					   portal.own_api_version ? "erpcrm.portal" : "erpcrm.api_version"));
	hs_parse_error(resp.body, resp.body_len, &err);
	if (resp.status == 401)
		check_row(&cxt, "token valid", false,
				  psprintf("HubSpot refused the token (%s): %s; make a new one in the private app's settings",
						   err.category, err.message));
	else if (resp.status != 200)
		check_row(&cxt, "portal", false,
				  psprintf("the account details answered %ld %s %s", resp.status, err.category, err.message));
	else
	{
		const char *fields[3] = {"portalId", "timeZone", "companyCurrency"};
		char	   *v[3];

		check_row(&cxt, "token valid", true, "HubSpot accepts the token");
		hs_parse_fields(resp.body, resp.body_len, 3, fields, v);
		check_row(&cxt, "portal", v[0] != NULL,
				  psprintf("portal %s, time zone %s, currency %s",
						   v[0] ? v[0] : "?", v[1] ? v[1] : "?", v[2] ? v[2] : "?"));
	}

	/* the rate limits the answer announced */
	if (resp.rl_max > 0)
		check_row(&cxt, "rate limit", erpcrm_max_calls_per_10s <= resp.rl_max,
				  psprintf("HubSpot allows %ld calls per %ld ms; erpcrm.max_calls_per_10s is %d%s",
						   resp.rl_max, resp.rl_interval_ms, erpcrm_max_calls_per_10s,
						   erpcrm_max_calls_per_10s <= resp.rl_max ? "" :
						   ": lower it, or every window ends in 429s"));
	if (resp.rl_daily > 0)
		check_row(&cxt, "daily budget", resp.rl_daily_remaining != 0,
				  psprintf("%ld of %ld calls left today", resp.rl_daily_remaining, resp.rl_daily));

	/* the scopes the mappings need */
	hs_http_request("POST", "/oauth/v2/private-apps/get/access-token-info",
					hs_token_info_body(token), &resp);
	explicit_bzero(token, strlen(token));
	if (resp.transport_error != 0 || resp.status != 200 ||
		!hs_parse_string_list(resp.body, resp.body_len, "scopes", &nscopes, &scopes))
	{
		check_row(&cxt, "scopes", false,
				  psprintf("the token's scopes could not be read (%ld)", resp.status));
		return (Datum) 0;
	}
	SPI_connect();
	/* the write scope each object type needs, and who needs it */
	if (SPI_execute("SELECT CASE object_type"
					"         WHEN 'companies' THEN 'crm.objects.companies.write'"
					"         WHEN 'contacts' THEN 'crm.objects.contacts.write'"
					"         WHEN 'deals' THEN 'crm.objects.deals.write'"
					"         WHEN 'orders' THEN 'crm.objects.orders.write'"
					"         WHEN '0-123' THEN 'crm.objects.orders.write'"
					"         WHEN 'products' THEN 'e-commerce'"
					"         WHEN 'line_items' THEN 'e-commerce'"
					"         ELSE 'crm.objects.custom.write' END,"
					"       string_agg(name, ', ' ORDER BY name)"
					"  FROM erpcrm.mapping GROUP BY 1 ORDER BY 1",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the mappings");
	{
		uint64		nrows = SPI_processed;
		SPITupleTable *tuptable = SPI_tuptable;

		for (uint64 i = 0; i < nrows; i++)
		{
			char	   *need = SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 1);
			char	   *names = SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 2);
			bool		have = has_scope(nscopes, scopes, need);

			if (!have && strcmp(need, "e-commerce") == 0)
			{
				/*
				 * Newer private apps get the granular scopes of products and
				 * line items instead of the legacy e-commerce scope.
				 */
				check_granular_scopes(&cxt, nscopes, scopes);
				continue;
			}
			check_row(&cxt, psprintf("scope %s", need), have,
					  have ? psprintf("granted; mappings %s need it", names) :
					  psprintf("missing: mappings %s need it; add it to the private app", names));
		}
	}
	SPI_finish();
	return (Datum) 0;
}
