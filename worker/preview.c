/*-------------------------------------------------------------------------
 *
 * preview.c
 *	  erpcrm._preview(): the requests the worker would send to HubSpot for
 *	  one key of a mapping, built by the worker's own code (the steps of
 *	  delivery_int.h) without sending anything.  erpcrm.preview() (SQL) is
 *	  its surface.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "delivery_int.h"
#include "erpcrm.h"
#include "fingerprint.h"

/*
 * erpcrm._preview(mapping_id int, erp_id text, hubspot_id text)
 *	 returns table (step int, method text, path text, body json, note text)
 *
 * hubspot_id is the key's HubSpot object as erpcrm knows it (sync_state),
 * or NULL.
 */
PG_FUNCTION_INFO_V1(erpcrm_preview_v1);
Datum
erpcrm_preview_v1(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		mapping_id;
	char	   *erp_id;
	char	   *known;
	MemoryContext cxt;
	MemoryContext old;
	MappingDef *mapping;
	List	   *steps;
	ListCell   *lc;
	int			n = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the mapping and the key must not be NULL")));
	mapping_id = PG_GETARG_INT32(0);
	erp_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	known = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	cxt = AllocSetContextCreate(CurrentMemoryContext, "erpcrm preview",
								ALLOCSET_DEFAULT_SIZES);
	SPI_connect();
	old = MemoryContextSwitchTo(cxt);
	mapping = erpcrm_mapping_by_id(mapping_id, cxt);
	steps = erpcrm_preview_key(mapping, erp_id, known);
	MemoryContextSwitchTo(old);

	foreach(lc, steps)
	{
		PreviewStep *step = lfirst(lc);
		Datum		values[5];
		bool		nulls[5] = {false, step->method == NULL, step->path == NULL,
		step->body == NULL, step->note == NULL};

		values[0] = Int32GetDatum(++n);
		values[1] = step->method ? CStringGetTextDatum(step->method) : (Datum) 0;
		values[2] = step->path ? CStringGetTextDatum(step->path) : (Datum) 0;
		values[3] = step->body ? CStringGetTextDatum(step->body) : (Datum) 0;
		values[4] = step->note ? CStringGetTextDatum(step->note) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	MemoryContextDelete(cxt);
	return (Datum) 0;
}

/* ----------------------------------------------------------------
 * erpcrm.preview(): the requests one key would cause, without sending
 * ----------------------------------------------------------------
 */
static void
preview_step(List **steps, const char *method, char *path, char *body,
			 char *note)
{
	PreviewStep *step = palloc0(sizeof(PreviewStep));

	step->method = method;
	step->path = path;
	step->body = body;
	step->note = note;
	*steps = lappend(*steps, step);
}

/*
 * The requests the worker would send for this key now, built by the code
 * that builds them for a batch: the view is read as in a batch (as the
 * mapping's owner, in a security-restricted operation), the key is sorted
 * as in a batch, and the bodies come from the same functions.  Nothing is
 * sent, nothing is recorded.  SPI is connected and a snapshot is active.
 * A key whose row cannot be sent raises an ERROR saying why.
 */
List *
erpcrm_preview_key(MappingDef *m, const char *erp_id, const char *known_hubspot_id)
{
	Batch		b;
	DeliveryOutcome outcome;
	BatchKey   *key;
	BatchKey   *upserts[1];
	BatchKey   *updates[1];
	BatchKey   *archives[1];
	int			nup = 0,
				nupd = 0,
				narch = 0;
	List	   *steps = NIL;
	int			owner;
	char	   *path;
	char	   *json;
	bool		by_explicit;

	init_batch(&b, m, &outcome, CurrentMemoryContext, 1);
	key = &b.keys[0];
	key->erp_id = pstrdup(erp_id);
	key->known_hubspot_id = known_hubspot_id ? pstrdup(known_hubspot_id) : NULL;

	read_rows(&b);
	if (key->outcome == KO_NONE && !key->in_view)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("key \"%s\" is not in the view %s of mapping \"%s\"",
						erp_id, m->source, m->name),
				 key->known_hubspot_id == NULL ? 0 :
				 errdetail(m->archive ?
						   "The worker would archive HubSpot object %s." :
						   "The worker would keep HubSpot object %s as it is.",
						   key->known_hubspot_id)));
	classify_keys(&b, upserts, &nup, updates, &nupd, archives, &narch);

	switch (key->outcome)
	{
		case KO_NONE:
			break;
		case KO_WAIT:
			preview_step(&steps, NULL, NULL, NULL, key->message);
			return steps;
		case KO_FAILED:
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("the row of key \"%s\" of mapping \"%s\" cannot be sent to HubSpot",
							erp_id, m->name),
					 errdetail("%s: %s", key->category ? key->category : "ERROR",
							   key->message ? key->message : "no reason given"),
					 errhint("The worker would park this key as failed (see erpcrm.failures); correct the row or the view.")));
			break;
		default:
			/* the view cannot be read at all (a privilege, a function) */
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the view %s of mapping \"%s\" cannot be read as its owner",
							m->source, m->name),
					 errdetail("%s: %s", key->category ? key->category : "ERROR",
							   key->message ? key->message : "no reason given"),
					 errhint("The worker would retry the key with backoff, and park it as failed after erpcrm.max_attempts attempts.")));
	}

	/* an empty owner is taken from the associated object, read first */
	owner = prop_index(&b, "hubspot_owner_id");
	for (int a = 0; a < m->nassoc && owner >= 0; a++)
	{
		AssocDef   *def = &m->assoc[a];
		const char *prop = "hubspot_owner_id";
		HsJsonBody *body;

		if (!def->inherit_owner || key->values[owner][0] != '\0' ||
			key->assoc_to[a] == NULL || key->assoc_to[a][0] == '\0')
			continue;
		body = hs_body_new();
		hs_body_add_read(body, key->assoc_to[a]);
		hs_body_set_properties(body, 1, &prop);
		preview_step(&steps, "POST",
					 psprintf("%s/%s/batch/read", HS_OBJECTS_PREFIX, def->target_type),
					 hs_body_finish(body),
					 psprintf("hubspot_owner_id is empty: the owner of %s \"%s\" is read, and sent with the object",
							  def->target_name, key->assoc_key[a]));
		break;
	}

	/* a new key may adopt a record made by hand */
	if (nup == 1 && m->match_property != NULL && key->known_hubspot_id == NULL)
	{
		int			mp = prop_index(&b, m->match_property);

		if (mp >= 0 && key->values[mp][0] != '\0')
		{
			const char *values[1] = {key->values[mp]};

			preview_step(&steps, "POST",
						 psprintf("%s/%s/search", HS_OBJECTS_PREFIX, m->object_type),
						 hs_search_body(m->match_property, 1, values, m->id_property, 100),
						 psprintf("a record with %s \"%s\" and no %s is adopted: it is updated by its id instead of the upsert below",
								  m->match_property, key->values[mp], m->id_property));
		}
	}

	by_explicit = (nupd == 1);
	json = objects_request(&b, by_explicit ? updates : upserts, 1, by_explicit, &path);
	preview_step(&steps, "POST", path, json,
				 by_explicit ? psprintf("update of HubSpot object %s (the view's hubspot_id)",
										key->explicit_id) :
				 key->known_hubspot_id ?
				 psprintf("upsert by %s; HubSpot object %s", m->id_property,
						  key->known_hubspot_id) :
				 psprintf("upsert by %s; creates the object", m->id_property));

	/* associations, from the object written */
	key->is_new = (key->explicit_id == NULL && key->known_hubspot_id == NULL);
	key->hubspot_id = key->explicit_id ? key->explicit_id :
		key->is_new ? "(new)" : key->known_hubspot_id;
	for (int a = 0; a < m->nassoc; a++)
	{
		AssocDef   *def = &m->assoc[a];
		const char *to;
		char	   *old;

		if (def->as_property != NULL)
			continue;
		association_change(key, def, a, &to, &old);
		if (old != NULL && (to == NULL || strcmp(old, to) != 0))
		{
			HsJsonBody *body = hs_body_new();

			hs_body_add_association_archive(body, key->hubspot_id, old);
			preview_step(&steps, "POST",
						 psprintf("%s/%s/%s/batch/archive", HS_ASSOCIATIONS_PREFIX,
								  m->object_type, def->target_type),
						 hs_body_finish(body),
						 psprintf("removes the association (%s) to %s %s made before",
								  def->column, def->target_name, old));
		}
		if (to != NULL && (old == NULL || strcmp(old, to) != 0))
		{
			json = association_request(&b, def, a, &key, 1, &path);
			preview_step(&steps, "POST", path, json,
						 psprintf("associates it (%s) to %s \"%s\"%s",
								  def->column, def->target_name, key->assoc_key[a],
								  key->is_new ? "; \"(new)\" is the id HubSpot gives the new object" : ""));
		}
	}
	return steps;
}
