/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The HubSpot HTTP client: one libcurl easy handle, reused for every
 *	  call so that the connection to HubSpot is kept alive.
 *
 * The transfer runs on a private multi handle that is polled in short
 * slices (HS_POLL_MS), so that a SIGTERM arriving in the middle of a slow
 * request ends it promptly: the progress callback and the poll loop both
 * look at ProcDiePending / ShutdownRequestPending.  The connection cache
 * lives in the multi handle, so connections survive from call to call.
 *
 * A call can be made in two halves (hs_http_start, then hs_http_finish),
 * so that the caller works while the request is on the wire: the worker
 * records and claims batches in its database meanwhile.  hs_http_progress
 * moves the transfer on without waiting (curl_multi_perform), between the
 * caller's steps.  One request is on the wire at a time: the rate limiter
 * grants a request before it starts, and none starts while another runs.
 *
 * libcurl callbacks must never palloc, elog or otherwise longjmp: they
 * collect the body into a malloc'd buffer and the headers into the caller's
 * HsResponse, and everything is turned into palloc'd memory only after the
 * transfer is over.
 *
 * Settings (base URL, token, CA file, timeouts, User-Agent) are kept in malloc'd memory
 * because they outlive every memory context of the worker.  The token is
 * never logged, and its memory is wiped before it is freed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/pmsignal.h"

#include "hubspot.h"


HsCallHook	hs_call_hook = NULL;

/* Largest answer body accepted; beyond it the transfer is aborted. */
#define HS_MAX_BODY			(64 * 1024 * 1024)

/* How long one poll of the transfer may sleep before interrupts are seen. */
#define HS_POLL_MS			100

/* A Retry-After beyond this (ms) is clamped: two days. */
#define HS_MAX_RETRY_AFTER	(2L * 24 * 3600 * 1000)

/* Body collected by the write callback (malloc'd, never palloc'd). */
typedef struct HsBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		too_large;		/* cap exceeded: transfer aborted */
	bool		no_memory;		/* realloc failed: transfer aborted */
} HsBuffer;

/* State that outlives memory contexts: plain malloc. */
static bool curl_initialized = false;
static CURL *hs_easy = NULL;
static CURLM *hs_multi = NULL;
static bool easy_in_multi = false;

static char *cfg_base_url = NULL;
static char *cfg_token = NULL;
static char *cfg_ca_file = NULL;
static char *cfg_user_agent = NULL;
static long cfg_connect_timeout_ms = 10000;
static long cfg_timeout_ms = 30000;

/* Prebuilt header lists, with and without a body (hold the token). */
static struct curl_slist *hdrs_body = NULL;
static struct curl_slist *hdrs_nobody = NULL;

/* The in-flight body buffer, so that a leak after an ERROR is recovered. */
static HsBuffer inflight = {NULL, 0, 0, false, false};

/*
 * The request on the wire, between hs_http_start and hs_http_finish.  The
 * caller keeps the HsResponse (the header callback fills it) and the body
 * (libcurl does not copy it) until hs_http_finish.
 */
typedef struct HsTransfer
{
	bool		active;			/* started, not finished */
	bool		done;			/* the transfer has ended */
	CURLcode	result;			/* its result, once done */
	const char *why;			/* a static text about a failure, or NULL */
	bool		aborted;		/* ended by a stop request */
	char	   *url;			/* palloc'd, in the caller's context */
	const char *method;
	const char *path;
	HsResponse *resp;
} HsTransfer;

static HsTransfer xfer;

static char errbuf[CURL_ERROR_SIZE];

/* ----------------------------------------------------------------
 * Small helpers (no palloc: some run inside callbacks)
 * ----------------------------------------------------------------
 */

/* Overwrite memory in a way the compiler may not drop. */
static void
wipe_memory(void *p, size_t len)
{
	volatile unsigned char *v = (volatile unsigned char *) p;

	while (len-- > 0)
		*v++ = 0;
}

/* Wipe and free a malloc'd string. */
static void
free_secret(char *s)
{
	if (s == NULL)
		return;
	wipe_memory(s, strlen(s));
	free(s);
}

/* Wipe every header of a list (they may hold the token), then free it. */
static void
free_header_list(struct curl_slist *list)
{
	struct curl_slist *l;

	for (l = list; l != NULL; l = l->next)
	{
		if (l->data)
			wipe_memory(l->data, strlen(l->data));
	}
	curl_slist_free_all(list);
}

/* strdup that returns NULL for NULL; ERRORs on OOM (never in a callback). */
static char *
dup_setting(const char *s)
{
	char	   *r;

	if (s == NULL)
		return NULL;
	r = strdup(s);
	if (r == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return r;
}

/* Reset the header-derived fields of a response. */
static void
reset_header_fields(HsResponse *resp)
{
	resp->rl_daily = -1;
	resp->rl_daily_remaining = -1;
	resp->rl_interval_ms = -1;
	resp->rl_max = -1;
	resp->rl_remaining = -1;
	resp->rl_secondly = -1;
	resp->rl_secondly_remaining = -1;
	resp->retry_after_ms = -1;
	resp->correlation_id[0] = '\0';
}

/*
 * Parse a non-negative decimal integer filling all of [s, s+len) apart from
 * surrounding blanks.  Returns -1 when it is not one, or does not fit.
 */
static long
parse_count(const char *s, size_t len)
{
	size_t		i = 0;
	long		v = 0;
	bool		any = false;

	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	while (i < len && s[i] >= '0' && s[i] <= '9')
	{
		if (v > (LONG_MAX - 9) / 10)
			return -1;
		v = v * 10 + (s[i] - '0');
		any = true;
		i++;
	}
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (!any || i != len)
		return -1;
	return v;
}

/*
 * Retry-After: delay-seconds (we also accept a fraction, "1.5"), or an
 * HTTP-date, converted to milliseconds from now.  -1 when unusable.
 */
static long
parse_retry_after(const char *s, size_t len)
{
	size_t		i = 0;
	long		secs = 0;
	long		frac_ms = 0;
	int			frac_digits = 0;
	bool		any = false;
	char		date[128];
	time_t		when;
	time_t		now;

	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	while (i < len && s[i] >= '0' && s[i] <= '9')
	{
		if (secs < HS_MAX_RETRY_AFTER / 1000)
			secs = secs * 10 + (s[i] - '0');
		any = true;
		i++;
	}
	if (any && i < len && s[i] == '.')
	{
		i++;
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			if (frac_digits < 3)
			{
				frac_ms = frac_ms * 10 + (s[i] - '0');
				frac_digits++;
			}
			else if (frac_digits == 3 && s[i] != '0')
			{
				/* round sub-millisecond remainders up */
				frac_ms++;
				frac_digits++;
			}
			i++;
		}
		while (frac_digits < 3)
		{
			frac_ms *= 10;
			frac_digits++;
		}
	}
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (any)
	{
		long		ms;

		if (i != len)
			return -1;
		if (secs >= HS_MAX_RETRY_AFTER / 1000)
			return HS_MAX_RETRY_AFTER;
		ms = secs * 1000 + frac_ms;
		return Min(ms, HS_MAX_RETRY_AFTER);
	}

	/* An HTTP-date, e.g. "Wed, 21 Oct 2015 07:28:00 GMT". */
	if (len - i == 0 || len - i >= sizeof(date))
		return -1;
	memcpy(date, s + i, len - i);
	date[len - i] = '\0';
	when = curl_getdate(date, NULL);
	if (when == (time_t) -1)
		return -1;
	now = time(NULL);
	if (when <= now)
		return 0;
	if ((double) (when - now) * 1000.0 >= (double) HS_MAX_RETRY_AFTER)
		return HS_MAX_RETRY_AFTER;
	return (long) (when - now) * 1000;
}

/* Case-insensitive "is the header name exactly this" test. */
static bool
header_is(const char *name, size_t namelen, const char *want)
{
	return strlen(want) == namelen && pg_strncasecmp(name, want, namelen) == 0;
}

/* ----------------------------------------------------------------
 * libcurl callbacks: no palloc, no elog, no longjmp
 * ----------------------------------------------------------------
 */

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HsBuffer   *buf = (HsBuffer *) userdata;
	size_t		n;

	if (nmemb != 0 && size > SIZE_MAX / nmemb)
		return 0;
	n = size * nmemb;
	if (n == 0)
		return 0;
	if (n > HS_MAX_BODY - buf->len)
	{
		buf->too_large = true;
		return 0;				/* aborts the transfer: CURLE_WRITE_ERROR */
	}
	if (buf->len + n + 1 > buf->cap)
	{
		size_t		newcap = buf->cap ? buf->cap : 16384;
		char	   *p;

		while (newcap < buf->len + n + 1)
			newcap *= 2;
		if (newcap > HS_MAX_BODY + 1)
			newcap = HS_MAX_BODY + 1;
		p = realloc(buf->data, newcap);
		if (p == NULL)
		{
			buf->no_memory = true;
			return 0;
		}
		buf->data = p;
		buf->cap = newcap;
	}
	memcpy(buf->data + buf->len, ptr, n);
	buf->len += n;
	buf->data[buf->len] = '\0';
	return n;
}

static size_t
header_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HsResponse *resp = (HsResponse *) userdata;
	size_t		n;
	size_t		namelen;
	const char *value;
	size_t		vlen;
	const char *colon;

	if (nmemb != 0 && size > SIZE_MAX / nmemb)
		return 0;
	n = size * nmemb;

	/* A new status line (redirect, 100-continue, final): start afresh. */
	if (n >= 5 && pg_strncasecmp(ptr, "HTTP/", 5) == 0)
	{
		reset_header_fields(resp);
		return n;
	}

	colon = memchr(ptr, ':', n);
	if (colon == NULL)
		return n;
	namelen = colon - ptr;
	value = colon + 1;
	vlen = n - namelen - 1;
	/* trim CRLF and blanks around the value */
	while (vlen > 0 && (value[vlen - 1] == '\r' || value[vlen - 1] == '\n' ||
						value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
		vlen--;
	while (vlen > 0 && (value[0] == ' ' || value[0] == '\t'))
	{
		value++;
		vlen--;
	}

	if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Daily"))
		resp->rl_daily = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Daily-Remaining"))
		resp->rl_daily_remaining = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Interval-Milliseconds"))
		resp->rl_interval_ms = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Max"))
		resp->rl_max = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Remaining"))
		resp->rl_remaining = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Secondly"))
		resp->rl_secondly = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-RateLimit-Secondly-Remaining"))
		resp->rl_secondly_remaining = parse_count(value, vlen);
	else if (header_is(ptr, namelen, "Retry-After"))
		resp->retry_after_ms = parse_retry_after(value, vlen);
	else if (header_is(ptr, namelen, "X-HubSpot-Correlation-Id"))
	{
		size_t		i;
		size_t		o = 0;

		/* keep printable ASCII only, truncated to fit */
		for (i = 0; i < vlen && o < sizeof(resp->correlation_id) - 1; i++)
		{
			unsigned char c = (unsigned char) value[i];

			if (c >= 0x20 && c < 0x7f)
				resp->correlation_id[o++] = (char) c;
		}
		resp->correlation_id[o] = '\0';
	}
	return n;
}

/*
 * True when the worker has been asked to stop, or when a session (running
 * check_connection() or setup_hubspot()) has a cancel pending:
 * pg_cancel_backend() or statement_timeout.
 */
static bool
stop_requested(void)
{
	return ProcDiePending || ShutdownRequestPending ||
		(!IsBackgroundWorker && QueryCancelPending);
}

static int
xferinfo_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			curl_off_t ultotal, curl_off_t ulnow)
{
	bool	   *aborted = (bool *) clientp;

	if (stop_requested())
	{
		*aborted = true;
		return 1;				/* CURLE_ABORTED_BY_CALLBACK */
	}
	return 0;
}

/* ----------------------------------------------------------------
 * Public functions
 * ----------------------------------------------------------------
 */

/*
 * Initialise libcurl once and create the reused easy handle.  Calling it
 * again is harmless.
 */
void
hs_http_init(void)
{
	CURLcode	rc;

	if (!curl_initialized)
	{
		rc = curl_global_init(CURL_GLOBAL_DEFAULT);
		if (rc != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl: %s",
							curl_easy_strerror(rc))));
		curl_initialized = true;
	}
	if (hs_multi == NULL)
	{
		hs_multi = curl_multi_init();
		if (hs_multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not create a libcurl multi handle")));
	}
	if (hs_easy == NULL)
	{
		hs_easy = curl_easy_init();
		if (hs_easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not create a libcurl handle")));
		easy_in_multi = false;
	}
}

/*
 * Build one header list; returns NULL on out-of-memory (after freeing what
 * was built).
 */
static struct curl_slist *
build_headers(bool with_body)
{
	struct curl_slist *list = NULL;
	struct curl_slist *t;
	char	   *auth = NULL;
	char	   *agent = NULL;

#define APPEND(s) \
	do { \
		t = curl_slist_append(list, (s)); \
		if (t == NULL) \
			goto fail; \
		list = t; \
	} while (0)

	if (cfg_token != NULL && cfg_token[0] != '\0')
	{
		size_t		alen = strlen("Authorization: Bearer ") + strlen(cfg_token) + 1;

		auth = malloc(alen);
		if (auth == NULL)
			goto fail;
		snprintf(auth, alen, "Authorization: Bearer %s", cfg_token);
		APPEND(auth);
		free_secret(auth);
		auth = NULL;
	}
	if (with_body)
		APPEND("Content-Type: application/json");
	APPEND("Accept: application/json");
	if (cfg_user_agent != NULL && cfg_user_agent[0] != '\0')
	{
		size_t		alen = strlen("User-Agent: ") + strlen(cfg_user_agent) + 1;

		agent = malloc(alen);
		if (agent == NULL)
			goto fail;
		snprintf(agent, alen, "User-Agent: %s", cfg_user_agent);
		APPEND(agent);
		free(agent);
		agent = NULL;
	}
	/* never wait for a 100-continue before sending a large body */
	APPEND("Expect:");
	return list;

fail:
	free_secret(auth);
	free(agent);
	free_header_list(list);
	return NULL;
#undef APPEND
}

/*
 * Trim blanks and line ends around a token (a token pasted into a file often
 * carries a newline).  Returns false when control characters remain inside,
 * which could inject headers.
 */
static bool
clean_token(char *tok)
{
	size_t		len = strlen(tok);
	size_t		start = 0;
	size_t		i;

	while (len > 0 && isspace((unsigned char) tok[len - 1]))
		tok[--len] = '\0';
	while (start < len && isspace((unsigned char) tok[start]))
		start++;
	if (start > 0)
	{
		memmove(tok, tok + start, len - start + 1);
		len -= start;
		wipe_memory(tok + len + 1, start);
	}
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) tok[i];

		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

/*
 * Copy the settings.  May be called again on reload; the old token is wiped.
 */
void
hs_http_configure(const HsHttpConfig *config)
{
	char	   *base_url;
	char	   *token;
	char	   *ca_file;
	char	   *user_agent;
	size_t		blen;

	base_url = dup_setting(config->base_url ? config->base_url : "");
	token = strdup(config->token ? config->token : "");
	if (token == NULL)
	{
		free(base_url);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	ca_file = strdup(config->ca_file ? config->ca_file : "");
	user_agent = strdup(config->user_agent ? config->user_agent : "");
	if (ca_file == NULL || user_agent == NULL)
	{
		free(base_url);
		free_secret(token);
		free(ca_file);
		free(user_agent);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	/* the caller's own text, but one header line all the same */
	for (const char *c = user_agent; *c; c++)
	{
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
		{
			free(base_url);
			free_secret(token);
			free(ca_file);
			free(user_agent);
			elog(ERROR, "erpcrm: the User-Agent contains control characters");
		}
	}

	/* a trailing slash would double up with the path's leading one */
	blen = strlen(base_url);
	while (blen > 0 && base_url[blen - 1] == '/')
		base_url[--blen] = '\0';

	if (!clean_token(token))
	{
		/* no WARNING text may contain the token itself */
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("erpcrm: the HubSpot access token contains control characters"),
				 errdetail("Requests are sent without an Authorization header until the token is fixed.")));
		wipe_memory(token, strlen(token));
		token[0] = '\0';
	}

	free(cfg_base_url);
	free_secret(cfg_token);
	free(cfg_ca_file);
	free(cfg_user_agent);
	cfg_base_url = base_url;
	cfg_token = token;
	cfg_ca_file = ca_file;
	cfg_user_agent = user_agent;
	cfg_connect_timeout_ms = Max(config->connect_timeout_ms, 0);
	cfg_timeout_ms = Max(config->timeout_ms, 0);

	free_header_list(hdrs_body);
	free_header_list(hdrs_nobody);
	hdrs_body = build_headers(true);
	hdrs_nobody = build_headers(false);
	if (hdrs_body == NULL || hdrs_nobody == NULL)
	{
		free_header_list(hdrs_body);
		free_header_list(hdrs_nobody);
		hdrs_body = hdrs_nobody = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
}

/* Free the handles and the settings (the token wiped). */
void
hs_http_cleanup(void)
{
	if (hs_multi != NULL && hs_easy != NULL && easy_in_multi)
		curl_multi_remove_handle(hs_multi, hs_easy);
	easy_in_multi = false;
	if (hs_easy != NULL)
		curl_easy_cleanup(hs_easy);
	hs_easy = NULL;
	if (hs_multi != NULL)
		curl_multi_cleanup(hs_multi);
	hs_multi = NULL;

	free_header_list(hdrs_body);
	free_header_list(hdrs_nobody);
	hdrs_body = hdrs_nobody = NULL;
	free(cfg_base_url);
	cfg_base_url = NULL;
	free_secret(cfg_token);
	cfg_token = NULL;
	free(cfg_ca_file);
	cfg_ca_file = NULL;
	free(cfg_user_agent);
	cfg_user_agent = NULL;

	free(inflight.data);
	memset(&inflight, 0, sizeof(inflight));
	memset(&xfer, 0, sizeof(xfer));

	if (curl_initialized)
		curl_global_cleanup();
	curl_initialized = false;
}

/* Record a transport failure in resp. */
static void
set_transport_error(HsResponse *resp, int code, const char *msg)
{
	resp->transport_error = code;
	strlcpy(resp->transport_message, msg, sizeof(resp->transport_message));
}

/* CURLOPT_CAINFO is set on the handle (see set_options) */
static bool ca_file_applied = false;

/*
 * Set the per-call options.  Returns CURLE_OK or the first failure.
 */
static CURLcode
set_options(const char *method, const char *url, const char *body,
			HsBuffer *buf, HsResponse *resp, bool *aborted)
{
	CURLcode	rc = CURLE_OK;
	CURL	   *h = hs_easy;
	bool		has_body = (body != NULL);

#define SETOPT(opt, val) \
	do { \
		if (rc == CURLE_OK) \
			rc = curl_easy_setopt(h, opt, val); \
	} while (0)

	/*
	 * An empty CA file means libcurl's built-in CA bundle and path.
	 * Setting CURLOPT_CAINFO to NULL would drop the bundle, so the option is
	 * only ever set to a file; after a reload that cleared it, the handle is
	 * reset to its defaults (its connections stay).
	 */
	if (ca_file_applied && (cfg_ca_file == NULL || cfg_ca_file[0] == '\0'))
	{
		curl_easy_reset(h);
		ca_file_applied = false;
	}

	SETOPT(CURLOPT_URL, url);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_ERRORBUFFER, errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SETOPT(CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SETOPT(CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
	if (cfg_ca_file != NULL && cfg_ca_file[0] != '\0')
	{
		SETOPT(CURLOPT_CAINFO, cfg_ca_file);
		ca_file_applied = true;
	}
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, cfg_connect_timeout_ms);
	SETOPT(CURLOPT_TIMEOUT_MS, cfg_timeout_ms);
	SETOPT(CURLOPT_ACCEPT_ENCODING, "");
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);

	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, (void *) buf);
	SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
	SETOPT(CURLOPT_HEADERDATA, (void *) resp);
	SETOPT(CURLOPT_NOPROGRESS, 0L);
	SETOPT(CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
	SETOPT(CURLOPT_XFERINFODATA, (void *) aborted);

	SETOPT(CURLOPT_HTTPHEADER, has_body ? hdrs_body : hdrs_nobody);

	/*
	 * The method.  Every option that differs between methods is set on every
	 * call, so nothing of the previous call (its body, its verb) leaks.
	 */
	SETOPT(CURLOPT_NOBODY, 0L);
	if (strcmp(method, "GET") == 0 && !has_body)
	{
		SETOPT(CURLOPT_CUSTOMREQUEST, (char *) NULL);
		SETOPT(CURLOPT_HTTPGET, 1L);
	}
	else if (strcmp(method, "DELETE") == 0 && !has_body)
	{
		SETOPT(CURLOPT_HTTPGET, 1L);
		SETOPT(CURLOPT_CUSTOMREQUEST, "DELETE");
	}
	else
	{
		const char *data = has_body ? body : "";

		SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(data));
		SETOPT(CURLOPT_POSTFIELDS, data);
		SETOPT(CURLOPT_CUSTOMREQUEST,
			   strcmp(method, "POST") == 0 ? (char *) NULL : method);
	}
	return rc;
#undef SETOPT
}

/*
 * Let the transfer on the multi handle go as far as it can without
 * waiting.  Returns true once it has ended (xfer.result says how).
 */
static bool
transfer_perform(void)
{
	CURLMcode	mc;
	CURLMsg    *msg;
	int			queued;
	int			running = 0;

	if (xfer.done)
		return true;
	mc = curl_multi_perform(hs_multi, &running);
	if (mc != CURLM_OK)
	{
		xfer.why = curl_multi_strerror(mc);
		xfer.result = (mc == CURLM_OUT_OF_MEMORY) ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
		xfer.done = true;
		return true;
	}
	while ((msg = curl_multi_info_read(hs_multi, &queued)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == hs_easy)
		{
			xfer.result = msg->data.result;
			xfer.done = true;
		}
	}
	if (!xfer.done && running == 0)
	{
		xfer.why = "transfer ended without a result";
		xfer.result = CURLE_FAILED_INIT;
		xfer.done = true;
	}
	return xfer.done;
}

/*
 * Wait for the transfer to end, in slices of HS_POLL_MS, or until a stop is
 * requested or the postmaster is gone.
 */
static void
transfer_wait(void)
{
	while (!transfer_perform())
	{
		CURLMcode	mc;

		if (stop_requested())
		{
			xfer.aborted = true;
			xfer.result = CURLE_ABORTED_BY_CALLBACK;
			xfer.done = true;
			break;
		}
		if (!PostmasterIsAlive())
		{
			xfer.aborted = true;
			xfer.why = "postmaster exited";
			xfer.result = CURLE_ABORTED_BY_CALLBACK;
			xfer.done = true;
			break;
		}
		mc = curl_multi_poll(hs_multi, NULL, 0, HS_POLL_MS, NULL);
		if (mc != CURLM_OK)
		{
			xfer.why = curl_multi_strerror(mc);
			xfer.result = CURLE_FAILED_INIT;
			xfer.done = true;
			break;
		}
	}
}

/*
 * Take the easy handle off the multi handle.  Detaching keeps a healthy
 * connection in the multi handle's cache for the next call; an interrupted
 * one is closed.
 */
static void
transfer_detach(void)
{
	if (easy_in_multi)
		curl_multi_remove_handle(hs_multi, hs_easy);
	easy_in_multi = false;
}

/*
 * Start one request: method is GET, POST, PATCH, PUT or DELETE; path is
 * appended to the base URL; body (JSON) may be NULL.  Returns true when the
 * request is on its way: hs_http_finish then fills resp, which the caller
 * keeps, with body, until then.  Returns false when it could not start
 * (resp says why: resp->transport_error != 0, resp->body "").
 */
bool
hs_http_start(const char *method, const char *path, const char *body,
			  HsResponse *resp)
{
	CURLcode	rc;
	CURLMcode	mc;

	memset(resp, 0, sizeof(*resp));
	reset_header_fields(resp);
	resp->body = palloc0(1);
	resp->body_len = 0;

	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 &&
		strcmp(method, "PATCH") != 0 && strcmp(method, "PUT") != 0 &&
		strcmp(method, "DELETE") != 0)
		elog(ERROR, "erpcrm: unsupported HTTP method \"%s\"", method);

	if (hs_easy == NULL || hs_multi == NULL)
		hs_http_init();

	/* recover from a previous call left by an ERROR */
	hs_http_abandon();

	if (cfg_base_url == NULL || hdrs_body == NULL || hdrs_nobody == NULL)
	{
		set_transport_error(resp, CURLE_FAILED_INIT,
							"HTTP client not configured");
		return false;
	}

	/* a stop already requested: do not even start */
	if (!IsBackgroundWorker)
		CHECK_FOR_INTERRUPTS();
	if (stop_requested())
	{
		resp->aborted = true;
		set_transport_error(resp, CURLE_ABORTED_BY_CALLBACK,
							"interrupted by a stop request");
		return false;
	}

	if (hs_call_hook)
		hs_call_hook(method, path, NULL);

	/* palloc before anything malloc'd exists, so an ERROR here leaks nothing */
	xfer.url = psprintf("%s%s", cfg_base_url, path ? path : "");
	xfer.method = method;
	xfer.path = path;
	xfer.resp = resp;
	xfer.done = false;
	xfer.aborted = false;
	xfer.why = NULL;
	xfer.result = CURLE_OK;

	errbuf[0] = '\0';
	rc = set_options(method, xfer.url, body, &inflight, resp, &xfer.aborted);
	if (rc != CURLE_OK)
	{
		xfer.why = curl_easy_strerror(rc);
		xfer.result = rc;
		xfer.done = true;
	}
	else if ((mc = curl_multi_add_handle(hs_multi, hs_easy)) != CURLM_OK)
	{
		xfer.why = curl_multi_strerror(mc);
		xfer.result = CURLE_FAILED_INIT;
		xfer.done = true;
	}
	else
	{
		easy_in_multi = true;
		/* on its way: as far as it goes without waiting */
		(void) transfer_perform();
	}
	xfer.active = true;
	return true;
}

/*
 * Move the request started by hs_http_start on without waiting, between
 * other work.  Returns true once it has ended (or when none is on the wire).
 */
bool
hs_http_progress(void)
{
	if (!xfer.active)
		return true;
	return transfer_perform();
}

/*
 * Drop the request on the wire, if any, without its answer (after an ERROR
 * in the caller's work, or before the next request).  HubSpot may still
 * carry it out.
 */
void
hs_http_abandon(void)
{
	if (hs_multi != NULL && hs_easy != NULL)
		transfer_detach();
	free(inflight.data);
	memset(&inflight, 0, sizeof(inflight));
	memset(&xfer, 0, sizeof(xfer));
}

/*
 * Wait for the answer of the request hs_http_start started and fill its
 * HsResponse.  A stop request or the postmaster's exit ends the wait (the
 * response is then "aborted").
 */
void
hs_http_finish(void)
{
	HsResponse *resp = xfer.resp;
	const char *method = xfer.method;
	const char *path = xfer.path;
	char	   *url = xfer.url;
	CURLcode	rc;
	const char *why;
	bool		aborted;
	long		status = 0;
	curl_off_t	total_us = 0;

	if (!xfer.active)
		elog(ERROR, "erpcrm: no HubSpot request to finish");

	/* pg_stat_activity shows the wait: wait_event_type "Extension" */
	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	transfer_wait();
	pgstat_report_wait_end();
	transfer_detach();
	rc = xfer.result;
	why = xfer.why;
	aborted = xfer.aborted;
	memset(&xfer, 0, sizeof(xfer));

	curl_easy_getinfo(hs_easy, CURLINFO_RESPONSE_CODE, &status);
	resp->status = status;
	if (curl_easy_getinfo(hs_easy, CURLINFO_TOTAL_TIME_T, &total_us) == CURLE_OK)
		resp->elapsed_ms = (double) total_us / 1000.0;
	resp->aborted = aborted;

	if (rc != CURLE_OK)
	{
		if (inflight.too_large)
			set_transport_error(resp, rc, "answer too large");
		else if (inflight.no_memory)
			set_transport_error(resp, CURLE_OUT_OF_MEMORY,
								"out of memory for the answer");
		else if (aborted)
			set_transport_error(resp, CURLE_ABORTED_BY_CALLBACK,
								why ? why : "interrupted by a stop request");
		else if (errbuf[0] != '\0')
			set_transport_error(resp, rc, errbuf);
		else
			set_transport_error(resp, rc, why ? why : curl_easy_strerror(rc));
		free(inflight.data);
		memset(&inflight, 0, sizeof(inflight));

		elog(DEBUG1, "erpcrm: %s %s failed after %.0f ms: %s",
			 method, url, resp->elapsed_ms, resp->transport_message);
		pfree(url);
		/* a session's cancel or termination: raise it now */
		if (aborted && !IsBackgroundWorker)
			CHECK_FOR_INTERRUPTS();
		if (hs_call_hook && !aborted)
			hs_call_hook(method, path, resp);
		return;
	}

	if (inflight.len > 0)
	{
		char	   *copy;

		copy = palloc_extended(inflight.len + 1, MCXT_ALLOC_NO_OOM);
		if (copy == NULL)
		{
			free(inflight.data);
			memset(&inflight, 0, sizeof(inflight));
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory"),
					 errdetail("Failed to keep an answer of HubSpot of %zu bytes.",
							   inflight.len)));
		}
		memcpy(copy, inflight.data, inflight.len);
		copy[inflight.len] = '\0';
		resp->body = copy;
		resp->body_len = inflight.len;
	}
	free(inflight.data);
	memset(&inflight, 0, sizeof(inflight));

	elog(DEBUG2, "erpcrm: %s %s -> %ld, %zu bytes in %.0f ms",
		 method, url, resp->status, resp->body_len, resp->elapsed_ms);
	pfree(url);
	if (hs_call_hook)
		hs_call_hook(method, path, resp);
}

/*
 * Send one request and wait for its answer (hs_http_start, then
 * hs_http_finish).  resp is filled in every case; resp->transport_error != 0
 * means no usable answer (and then resp->body is "").
 */
void
hs_http_request(const char *method, const char *path, const char *body,
				HsResponse *resp)
{
	if (hs_http_start(method, path, body, resp))
		hs_http_finish();
}
