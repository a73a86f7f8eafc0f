/*-------------------------------------------------------------------------
 *
 * fuzz_portal.c
 *	  libFuzzer harness for the parsers of portal answers in hubspot/json.c:
 *	  hs_parse_names (GET /crm/v3/properties), hs_parse_pipeline (deal
 *	  pipelines), hs_parse_fields (account details) and
 *	  hs_parse_string_list (a token's scopes), as erpcrm.setup_hubspot() and
 *	  erpcrm.check_connection() call them.  Every input goes to all four.
 *
 * Checked besides memory safety: counts are not negative, every string
 * returned is present and valid UTF-8, no cJSON tree outlives a call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <cjson/cJSON.h>

#include "hubspot.h"
#include "fuzzcheck.h"

static const char *const fields[] = {
	"portalId", "timeZone", "companyCurrency", "uiDomain", "dataHostingLocation",
	"hubId", "appId", "userId", "expiresAt", "tokenType",
};

static void
parse(const char *body, size_t len, bool oom)
{
	int			nnames = -1;
	char	  **names = NULL;
	char	   *pipeline_id = NULL;
	int			nstages = -1;
	char	  **stage_labels = NULL;
	char	  **stage_ids = NULL;
	char	   *values[lengthof(fields)];
	int			nscopes = -1;
	char	  **scopes = NULL;
	bool		names_ok;
	bool		pipeline_ok;
	bool		fields_ok;
	bool		scopes_ok;

	names_ok = hs_parse_names(body, len, "name", &nnames, &names);
	pipeline_ok = hs_parse_pipeline(body, len, "Invoices (ERP)", &pipeline_id,
									&nstages, &stage_labels, &stage_ids);
	fields_ok = hs_parse_fields(body, len, lengthof(fields), fields, values);
	scopes_ok = hs_parse_string_list(body, len, "scopes", &nscopes, &scopes);
	fuzz_allocs_mark = stub_cjson_allocs;

	FUZZ_ASSERT(nnames >= 0);
	FUZZ_ASSERT(names_ok || nnames == 0);
	for (int i = 0; i < nnames; i++)
		FUZZ_ASSERT(FUZZ_STR_OK(names[i]));

	FUZZ_ASSERT(nstages >= 0);
	if (pipeline_ok)
	{
		FUZZ_ASSERT(FUZZ_STR_OK(pipeline_id));
		for (int i = 0; i < nstages; i++)
		{
			FUZZ_ASSERT(FUZZ_STR_OK(stage_labels[i]));
			FUZZ_ASSERT(FUZZ_STR_OK(stage_ids[i]));
		}
	}
	else
		FUZZ_ASSERT(nstages == 0);

	for (int i = 0; i < (int) lengthof(fields); i++)
		FUZZ_ASSERT(values[i] == NULL || FUZZ_STR_OK(values[i]));
	if (!fields_ok)
		for (int i = 0; i < (int) lengthof(fields); i++)
			FUZZ_ASSERT(values[i] == NULL);

	FUZZ_ASSERT(nscopes >= 0);
	FUZZ_ASSERT(scopes_ok || nscopes == 0);
	for (int i = 0; i < nscopes; i++)
		FUZZ_ASSERT(FUZZ_STR_OK(scopes[i]));
	(void) oom;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_run_parser(parse, data, size);
	return 0;
}
