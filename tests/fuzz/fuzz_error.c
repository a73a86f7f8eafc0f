/*-------------------------------------------------------------------------
 *
 * fuzz_error.c
 *	  libFuzzer harness for hs_parse_error() (hubspot/json.c): the parser of
 *	  HubSpot's error bodies (400, 401, 403, 404, 409, 429, 5xx), whose
 *	  fields end up in erpcrm.failures, erpcrm.worker and the rate limiter.
 *
 * Checked besides memory safety: every field is present and valid UTF-8
 * whatever the body; the answer is accepted exactly when it is a JSON
 * object; ids are present; no cJSON tree outlives the call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "hubspot.h"
#include "fuzzcheck.h"

static void
parse(const char *body, size_t len, bool oom)
{
	HsError		e;
	bool		ok;

	ok = hs_parse_error(body, len, &e);
	fuzz_allocs_mark = stub_cjson_allocs;

	FUZZ_ASSERT(FUZZ_STR_OK(e.status));
	FUZZ_ASSERT(FUZZ_STR_OK(e.message));
	FUZZ_ASSERT(FUZZ_STR_OK(e.category));
	FUZZ_ASSERT(FUZZ_STR_OK(e.sub_category));
	FUZZ_ASSERT(FUZZ_STR_OK(e.correlation_id));
	FUZZ_ASSERT(FUZZ_STR_OK(e.policy_name));
	FUZZ_ASSERT(e.nids >= 0 && (e.nids == 0 || e.ids != NULL));
	for (int i = 0; i < e.nids; i++)
		FUZZ_ASSERT(FUZZ_STR_OK(e.ids[i]));
	if (!ok)
		FUZZ_ASSERT(e.nids == 0 && e.message[0] == '\0');

	if (!oom)
	{
		cJSON	   *root = len > 0 ? cJSON_ParseWithLength(body, len) : NULL;

		FUZZ_ASSERT(ok == (root != NULL && cJSON_IsObject(root)));
		cJSON_Delete(root);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_run_parser(parse, data, size);
	return 0;
}
