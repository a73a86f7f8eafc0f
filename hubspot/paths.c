/*-------------------------------------------------------------------------
 *
 * paths.c
 *	  The one place the HubSpot API's path prefixes are spelled, for the
 *	  API version in use.
 *
 * HubSpot serves its CRM API under /crm/v3 (and /crm/v4 for associations)
 * and, since 2026, under date-versioned families with the same requests
 * and answers: /crm/objects/2026-03/..., /crm/associations/2026-03/...,
 * /crm/properties/2026-03/..., /crm/pipelines/2026-03/...,
 * /crm/owners/2026-03.  hs_set_api_version() picks one; every caller builds
 * its paths from hs_prefix().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "hubspot.h"

#define HS_VERSION_LEN 8		/* "2026-03" */

static char api_version[HS_VERSION_LEN] = "";	/* "" = /crm/v3 and /crm/v4 */
static char prefixes[HS_FAMILY_COUNT][64];
static bool prefixes_built = false;

static const char *const family_names[HS_FAMILY_COUNT] = {
	"objects", "associations", "properties", "pipelines", "owners"
};

/* Is this "v3" (or empty), or a date version "YYYY-MM"? */
bool
hs_valid_api_version(const char *version)
{
	if (version == NULL || version[0] == '\0' || strcmp(version, "v3") == 0)
		return true;
	if (strlen(version) != 7 || version[4] != '-')
		return false;
	for (int i = 0; i < 7; i++)
		if (i != 4 && !isdigit((unsigned char) version[i]))
			return false;
	return version[5] < '1' ? version[6] >= '1' : (version[5] == '1' && version[6] <= '2');
}

static void
build_prefixes(void)
{
	for (int f = 0; f < HS_FAMILY_COUNT; f++)
	{
		if (api_version[0] != '\0')
			snprintf(prefixes[f], sizeof(prefixes[f]), "/crm/%s/%s",
					 family_names[f], api_version);
		else
			snprintf(prefixes[f], sizeof(prefixes[f]), "/crm/%s/%s",
					 f == HS_FAMILY_ASSOCIATIONS ? "v4" : "v3", family_names[f]);
	}
	prefixes_built = true;
}

/*
 * Use this API version from now on: "v3" or "" for /crm/v3 (/crm/v4 for
 * associations), or a date version such as "2026-03".  Returns false, and
 * changes nothing, for anything else.
 */
bool
hs_set_api_version(const char *version)
{
	if (!hs_valid_api_version(version))
		return false;
	if (version == NULL || strcmp(version, "v3") == 0)
		version = "";
	strlcpy(api_version, version, sizeof(api_version));
	build_prefixes();
	return true;
}

/* The path prefix of a family, without a trailing slash. */
const char *
hs_prefix(HsFamily family)
{
	if (!prefixes_built)
		build_prefixes();
	Assert(family >= 0 && family < HS_FAMILY_COUNT);
	return prefixes[family];
}
