/*-------------------------------------------------------------------------
 *
 * fuzz_property.c
 *	  libFuzzer harness for hs_parse_property() (hubspot/json.c): one
 *	  property per result of a batch/read or search answer, with which the
 *	  worker adopts existing HubSpot records and finds line items' products.
 *
 * Checked besides memory safety: an accepted answer gives one id (present,
 * valid UTF-8) and one value (NULL or valid UTF-8) per element of
 * "results"; a refused one gives nothing; no cJSON tree outlives the call.
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
	int			n = -1;
	char	  **ids = (char **) 1;
	char	  **values = (char **) 1;
	bool		ok;

	ok = hs_parse_property(body, len, "erp_id", &n, &ids, &values);
	fuzz_allocs_mark = stub_cjson_allocs;

	FUZZ_ASSERT(n >= 0);
	if (!ok)
	{
		FUZZ_ASSERT(n == 0);
		return;
	}
	FUZZ_ASSERT(ids != NULL && values != NULL);
	for (int i = 0; i < n; i++)
	{
		FUZZ_ASSERT(FUZZ_STR_OK(ids[i]));
		FUZZ_ASSERT(values[i] == NULL || FUZZ_STR_OK(values[i]));
	}
	if (!oom)
	{
		cJSON	   *root = cJSON_ParseWithLength(body, len);
		const cJSON *results = cJSON_GetObjectItemCaseSensitive(root, "results");

		FUZZ_ASSERT(cJSON_IsArray(results));
		FUZZ_ASSERT(n == cJSON_GetArraySize(results));
		cJSON_Delete(root);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_run_parser(parse, data, size);
	return 0;
}
