/*-------------------------------------------------------------------------
 *
 * fuzz_batch.c
 *	  libFuzzer harness for hs_parse_batch() (hubspot/json.c): the parser of
 *	  HubSpot's 200/201/207 batch answers, which decides which ERP keys are
 *	  synced and which failed.
 *
 * Each input is parsed twice, keyed by the upsert property ("erp_id", as
 * for upserts) and by the result id (NULL, as for associations and
 * updates).  Checked besides memory safety:
 *	  - a refused answer says why and leaves the result empty;
 *	  - an accepted answer yields one item per element of "results" and of
 *		"errors", each with its strings present and valid UTF-8, statuses
 *		0 or 100..599;
 *	  - no cJSON tree outlives the call (see tests/stubs/pgstubs.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "hubspot.h"
#include "fuzzcheck.h"

/* Size of member name of root when it is an array, else -1. */
static int
array_size(const cJSON *root, const char *name)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, name);

	return cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
}

static void
check_one(const char *body, size_t len, bool ok, HsBatchResult out,
		  const char *why, bool oom)
{
	if (!ok)
	{
		FUZZ_ASSERT(why != NULL && why[0] != '\0');
		FUZZ_ASSERT(out.nresults == 0 && out.results == NULL);
		FUZZ_ASSERT(out.nerrors == 0 && out.errors == NULL);
		return;
	}
	FUZZ_ASSERT(why == NULL);
	FUZZ_ASSERT(out.nresults >= 0 && out.nerrors >= 0);
	FUZZ_ASSERT(out.nresults == 0 || out.results != NULL);
	FUZZ_ASSERT(out.nerrors == 0 || out.errors != NULL);
	for (int i = 0; i < out.nresults; i++)
	{
		FUZZ_ASSERT(FUZZ_STR_OK(out.results[i].key));
		FUZZ_ASSERT(FUZZ_STR_OK(out.results[i].hubspot_id));
	}
	for (int i = 0; i < out.nerrors; i++)
	{
		HsErrorItem *e = &out.errors[i];

		FUZZ_ASSERT(e->status == 0 || (e->status >= 100 && e->status <= 599));
		FUZZ_ASSERT(FUZZ_STR_OK(e->category));
		FUZZ_ASSERT(FUZZ_STR_OK(e->message));
		FUZZ_ASSERT(e->nids >= 0 && (e->nids == 0 || e->ids != NULL));
		for (int k = 0; k < e->nids; k++)
			FUZZ_ASSERT(FUZZ_STR_OK(e->ids[k]));
	}

	/* an accepted answer is used whole: every result and every error */
	if (!oom)
	{
		cJSON	   *root = cJSON_ParseWithLength(body, len);
		int			nres;
		int			nerr;

		FUZZ_ASSERT(root != NULL && cJSON_IsObject(root));
		nres = array_size(root, "results");
		nerr = array_size(root, "errors");
		FUZZ_ASSERT(out.nresults == Max(nres, 0));
		FUZZ_ASSERT(out.nerrors == Max(nerr, 0));
		cJSON_Delete(root);
	}
}

static void
parse(const char *body, size_t len, bool oom)
{
	HsBatchResult by_key;
	HsBatchResult by_id;
	const char *why_key = "unset";
	const char *why_id = "unset";
	bool		ok_key;
	bool		ok_id;

	ok_key = hs_parse_batch(body, len, "erp_id", &by_key, &why_key);
	ok_id = hs_parse_batch(body, len, NULL, &by_id, &why_id);
	fuzz_allocs_mark = stub_cjson_allocs;
	check_one(body, len, ok_key, by_key, why_key, oom);
	check_one(body, len, ok_id, by_id, why_id, oom);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_run_parser(parse, data, size);
	return 0;
}
