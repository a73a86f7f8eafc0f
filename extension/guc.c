/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  erpcrm's settings (postgresql.conf, prefix "erpcrm.") and the access
 *	  token, which is never shown to anybody.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "storage/fd.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/guc.h"

#include "erpcrm.h"
#include "hubspot.h"
#include "subscribe.h"

char	   *erpcrm_database = NULL;
char	   *erpcrm_role = NULL;
char	   *erpcrm_hubspot_url = NULL;
char	   *erpcrm_token = NULL;
char	   *erpcrm_token_file = NULL;
char	   *erpcrm_ca_file = NULL;
int			erpcrm_batch_size = 100;
int			erpcrm_max_calls_per_10s = 80;
int			erpcrm_connect_timeout_ms = 10000;
int			erpcrm_request_timeout_ms = 60000;
int			erpcrm_retry_base_ms = 1000;
int			erpcrm_retry_max_ms = 300000;
int			erpcrm_max_attempts = 10;
int			erpcrm_auth_retry_ms = 300000;
int			erpcrm_poll_interval_ms = 10000;
int			erpcrm_test_probe_pause_ms = 0;
int			erpcrm_api_log_retention_min = 1440;
char	   *erpcrm_api_version = NULL;

/*
 * SHOW and pg_settings never see the token itself, whoever asks: only
 * whether one is set.
 */
static const char *
show_secret(void)
{
	return (erpcrm_token != NULL && erpcrm_token[0] != '\0') ? "(set)" : "";
}

static bool
check_token(char **newval, void **extra, GucSource source)
{
	const char *p;

	if (*newval == NULL)
		return true;
	for (p = *newval; *p; p++)
	{
		/* header injection guard: a token is one line of printable ASCII */
		if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
		{
			GUC_check_errmsg("erpcrm.token contains a character that cannot appear in a token");
			GUC_check_errhint("A HubSpot access token is printable ASCII without spaces.");
			return false;
		}
	}
	return true;
}

static bool
check_url(char **newval, void **extra, GucSource source)
{
	const char *v = *newval;
	size_t		len;

	if (v == NULL || v[0] == '\0')
	{
		GUC_check_errmsg("erpcrm.hubspot_url must not be empty");
		return false;
	}
	if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
	{
		GUC_check_errmsg("erpcrm.hubspot_url must start with https:// or http://");
		GUC_check_errdetail("The value given was \"%s\".", v);
		return false;
	}
	len = strlen(v);
	if (v[len - 1] == '/')
	{
		GUC_check_errmsg("erpcrm.hubspot_url must not end with a slash");
		GUC_check_errhint("Use for example https://api.hubapi.com");
		return false;
	}
	return true;
}

static bool
check_api_version(char **newval, void **extra, GucSource source)
{
	if (hs_valid_api_version(*newval))
		return true;
	GUC_check_errmsg("erpcrm.api_version must be v3 or a date version such as 2026-03");
	GUC_check_errdetail("The value given was \"%s\".", *newval);
	return false;
}

static emit_log_hook_type prev_emit_log_hook = NULL;

/* A token this process read from a file (its database's, or the cluster's). */
static char *redacted_token = NULL;

/* Blank this secret in whatever this process logs from now on. */
void
erpcrm_redact_also(const char *secret)
{
	if (secret == NULL || strlen(secret) < 4)
		return;
	if (redacted_token != NULL)
	{
		if (strcmp(redacted_token, secret) == 0)
			return;
		explicit_bzero(redacted_token, strlen(redacted_token));
		pfree(redacted_token);
	}
	redacted_token = MemoryContextStrdup(TopMemoryContext, secret);
}

/* Replace every occurrence of secret in *text by asterisks. */
static void
redact(char **text, const char *secret)
{
	char	   *hit;
	size_t		len = strlen(secret);

	if (*text == NULL || len == 0)
		return;
	while ((hit = strstr(*text, secret)) != NULL)
		memset(hit, '*', len);
}

/*
 * The server log never shows the token.  PostgreSQL logs the new value of a
 * setting changed by a reload ("parameter ... changed to ..."), and invalid
 * values in its errors; this hook, installed in every process that loads the
 * library (the postmaster included), blanks such messages and any other
 * occurrence of the current token.
 */
static void
erpcrm_emit_log_hook(ErrorData *edata)
{
	if (edata->message != NULL &&
		strstr(edata->message, "\"erpcrm.token\"") != NULL)
	{
		if (strncmp(edata->message, "parameter \"erpcrm.token\" changed", 32) == 0)
			edata->message = pstrdup("parameter \"erpcrm.token\" changed");
		else if (strstr(edata->message, "value") != NULL)
			edata->message = pstrdup("invalid value for parameter \"erpcrm.token\"");
	}
	if (erpcrm_token != NULL && strlen(erpcrm_token) >= 4)
	{
		redact(&edata->message, erpcrm_token);
		redact(&edata->detail, erpcrm_token);
		redact(&edata->context, erpcrm_token);
		redact(&edata->internalquery, erpcrm_token);
	}
	if (redacted_token != NULL)
	{
		redact(&edata->message, redacted_token);
		redact(&edata->detail, redacted_token);
		redact(&edata->context, redacted_token);
		redact(&edata->internalquery, redacted_token);
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

void
erpcrm_define_settings(void)
{
	static bool hook_installed = false;

	if (!hook_installed)
	{
		prev_emit_log_hook = emit_log_hook;
		emit_log_hook = erpcrm_emit_log_hook;
		hook_installed = true;
	}

	DefineCustomStringVariable("erpcrm.database",
							   "The only database erpcrm delivers from; empty means every database that has the extension.",
							   "The launcher starts one worker per database served.",
							   &erpcrm_database,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("erpcrm.role",
							   "Role the erpcrm worker runs its SQL as.",
							   "Empty means the bootstrap superuser.  The role must be a member of erpcrm_admin and able to read the mapping views.",
							   &erpcrm_role,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("erpcrm.hubspot_url",
							   "Base URL of the HubSpot API.",
							   NULL,
							   &erpcrm_hubspot_url,
							   "https://api.hubapi.com",
							   PGC_SIGHUP, 0,
							   check_url, NULL, NULL);

	DefineCustomStringVariable("erpcrm.token",
							   "HubSpot private app access token.",
							   "Never shown: SHOW and pg_settings only say whether it is set.  Prefer erpcrm.token_file.",
							   &erpcrm_token,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   check_token, NULL, show_secret);

	DefineCustomStringVariable("erpcrm.token_file",
							   "File holding the HubSpot access token (used when erpcrm.token is empty).",
							   NULL,
							   &erpcrm_token_file,
							   "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("erpcrm.ca_file",
							   "CA certificate file for verifying HubSpot's TLS certificate.",
							   "Empty means the system's CA store.  Verification is always on.",
							   &erpcrm_ca_file,
							   "",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.batch_size",
							"Inputs per HubSpot batch call.",
							"HubSpot accepts at most 100.  A mapping's own batch size overrides it.",
							&erpcrm_batch_size,
							100, 1, 100,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.max_calls_per_10s",
							"Client-side limit of HubSpot calls per rolling 10-second window.",
							"HubSpot allows 100 (Free, Starter) or 190 (Professional, Enterprise) per app; keep headroom for other integrations.",
							&erpcrm_max_calls_per_10s,
							80, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.connect_timeout",
							"Time allowed to connect to HubSpot.",
							NULL,
							&erpcrm_connect_timeout_ms,
							10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.request_timeout",
							"Time allowed for one HubSpot call, answer included.",
							NULL,
							&erpcrm_request_timeout_ms,
							60000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.retry_base",
							"First retry delay after a transient failure (doubles each attempt, with jitter).",
							NULL,
							&erpcrm_retry_base_ms,
							1000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.retry_max",
							"Longest retry delay after transient failures.",
							NULL,
							&erpcrm_retry_max_ms,
							300000, 10, 86400000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.max_attempts",
							"Attempts after which a key that fails on its own is parked as failed.",
							"Counts retries that only this key needs: a row the view cannot read, an input or association HubSpot keeps refusing. Outages and rate limits never count.",
							&erpcrm_max_attempts,
							10, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.auth_retry",
							"How long the worker waits after HubSpot refused the token (401, 403) before trying again.",
							"A configuration reload retries at once.",
							&erpcrm_auth_retry_ms,
							300000, 100, 86400000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.poll_interval",
							"Fallback poll of the outbox when no commit woke the worker.",
							NULL,
							&erpcrm_poll_interval_ms,
							10000, 10, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.test_probe_pause",
							"For tests only: how long a worker that found no erpcrm in its database waits before it leaves.",
							"It makes the launcher's race with a CREATE EXTENSION that commits at that moment happen on demand (tests/t/067_probe_race.pl).",
							&erpcrm_test_probe_pause_ms,
							0, 0, 60000,
							PGC_SIGHUP, GUC_UNIT_MS | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("erpcrm.api_log_retention",
							"How long erpcrm.api_log keeps HubSpot calls.",
							NULL,
							&erpcrm_api_log_retention_min,
							1440, 1, 525600,
							PGC_SIGHUP, GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomStringVariable("erpcrm.api_version",
							   "HubSpot API paths to call: v3 (/crm/v3, /crm/v4) or a date version (/crm/objects/2026-03, ...).",
							   NULL,
							   &erpcrm_api_version,
							   "v3",
							   PGC_SIGHUP, 0,
							   check_api_version, NULL, NULL);
	/* the way back: subscriptions (subscribe.c) */
	erpcrm_define_pull_settings();

	MarkGUCPrefixReserved("erpcrm");
}

/*
 * The token to send: the file erpcrm.portal names for this database, else
 * erpcrm.token, else the first line of erpcrm.token_file.  Returns a
 * palloc'd string, "" when none is configured.  Errors name the file, never
 * its content; a token read from a file is blanked in this process's log.
 */
char *
erpcrm_read_token(void)
{
	FILE	   *f;
	char		buf[4096];
	size_t		n;
	char	   *p;
	ErpcrmPortalConfig portal;
	const char *path = erpcrm_token_file;
	const char *setting = "erpcrm.token_file";

	erpcrm_portal_config(&portal);
	if (portal.token_file != NULL && portal.token_file[0] != '\0')
	{
		path = portal.token_file;
		setting = "erpcrm.portal.token_file";
	}
	else if (erpcrm_token != NULL && erpcrm_token[0] != '\0')
		return pstrdup(erpcrm_token);
	if (path == NULL || path[0] == '\0')
		return pstrdup("");

	f = AllocateFile(path, "r");
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open %s \"%s\": %m", setting, path)));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	FreeFile(f);
	buf[n] = '\0';
	/* first line, surrounding white space removed */
	for (p = buf; *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'; p++)
		;
	p[strcspn(p, "\r\n \t")] = '\0';
	p = pstrdup(p);
	explicit_bzero(buf, sizeof(buf));
	erpcrm_redact_also(p);
	return p;
}
