/*-------------------------------------------------------------------------
 *
 * hubspot.h
 *	  The HubSpot client: the HTTP client (http.c), request and response
 *	  JSON (json.c) and the client-side rate limiter (ratelimit.c).
 *
 * A layer of its own, below the extension and the worker: it includes
 * nothing of theirs and knows none of erpcrm's settings; the caller passes
 * URL, token, timeouts, User-Agent (HsHttpConfig) and limits
 * (hs_rate_configure).  The unit and fuzz tests link it alone.
 *
 * Everything returned by these functions is allocated in the caller's
 * CurrentMemoryContext; the worker resets a per-batch context after each
 * batch, so callers never free results one by one.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_HUBSPOT_H
#define ERPCRM_HUBSPOT_H

#include "postgres.h"

#include "datatype/timestamp.h"

/*
 * paths.c: the one place the API path prefixes are spelled, for the API
 * version in use (/crm/v3 and /crm/v4, or a date-versioned family such as
 * /crm/objects/2026-03).
 */
typedef enum HsFamily
{
	HS_FAMILY_OBJECTS,
	HS_FAMILY_ASSOCIATIONS,
	HS_FAMILY_PROPERTIES,
	HS_FAMILY_PIPELINES,
	HS_FAMILY_OWNERS,
	HS_FAMILY_COUNT
} HsFamily;

extern bool hs_valid_api_version(const char *version);
extern bool hs_set_api_version(const char *version);
extern const char *hs_prefix(HsFamily family);

#define HS_OBJECTS_PREFIX		hs_prefix(HS_FAMILY_OBJECTS)
#define HS_ASSOCIATIONS_PREFIX	hs_prefix(HS_FAMILY_ASSOCIATIONS)
#define HS_PROPERTIES_PREFIX	hs_prefix(HS_FAMILY_PROPERTIES)
#define HS_PIPELINES_PREFIX		hs_prefix(HS_FAMILY_PIPELINES)
/* (no date-versioned twin is documented) */
#define HS_PIPELINE_LIMITS_PATH	"/crm/v3/limits/pipelines"

/* HubSpot's documented maximum number of inputs per batch call. */
#define HS_MAX_BATCH			100

/* ----------------------------------------------------------------
 * http.c: one reused libcurl easy handle (keep-alive)
 * ----------------------------------------------------------------
 */
typedef struct HsHttpConfig
{
	const char *base_url;		/* "https://api.hubapi.com", no trailing / */
	const char *token;			/* bearer token; never logged */
	const char *ca_file;		/* NULL or "" = system CA store */
	int			connect_timeout_ms;
	int			timeout_ms;
	const char *user_agent;		/* User-Agent header; NULL or "" = none */
} HsHttpConfig;

typedef struct HsResponse
{
	long		status;			/* HTTP status; 0 when no answer arrived */
	int			transport_error;	/* CURLcode; 0 = a full answer arrived */
	char		transport_message[256]; /* curl's text, never the token */
	bool		aborted;		/* interrupted by a pending signal */
	char	   *body;			/* NUL-terminated, "" when none */
	size_t		body_len;
	double		elapsed_ms;		/* total time of the call */

	/* X-HubSpot-RateLimit-* headers, -1 where absent */
	long		rl_daily;
	long		rl_daily_remaining;
	long		rl_interval_ms;
	long		rl_max;
	long		rl_remaining;
	long		rl_secondly;
	long		rl_secondly_remaining;
	long		retry_after_ms; /* Retry-After in ms, -1 if absent */
	char		correlation_id[64]; /* X-HubSpot-Correlation-Id, "" if none */
} HsResponse;

extern void hs_http_init(void);
extern void hs_http_configure(const HsHttpConfig *config);
extern void hs_http_cleanup(void);
/*
 * Called around every request when set (by erpcrm's sessions): with
 * resp NULL just before the call, and with the answer after it (not after
 * a call interrupted by a cancel).
 */
typedef void (*HsCallHook) (const char *method, const char *path,
							const HsResponse *resp);
extern HsCallHook hs_call_hook;

extern void hs_http_request(const char *method, const char *path,
							const char *body, HsResponse *resp);

/* ----------------------------------------------------------------
 * json.c: request bodies and response parsing with cJSON
 * ----------------------------------------------------------------
 */
typedef struct HsJsonBody HsJsonBody;	/* opaque {"inputs":[...]} builder */

extern HsJsonBody *hs_body_new(void);
extern int	hs_body_count(HsJsonBody *body);

/* {"idProperty":p,"id":id,"properties":{names[i]: values[i] or ""}} */
extern void hs_body_add_upsert(HsJsonBody *body, const char *id_property,
							   const char *id, int nprops,
							   const char *const *names,
							   const char *const *values);

/* {"id":hubspot_id,"properties":{...}} */
extern void hs_body_add_update(HsJsonBody *body, const char *hubspot_id,
							   int nprops, const char *const *names,
							   const char *const *values);

/* {"id":hubspot_id} */
extern void hs_body_add_archive(HsJsonBody *body, const char *hubspot_id);

/*
 * Association v4: {"from":{"id":f},"to":{"id":t}} and, when type_id > 0,
 * "types":[{"associationCategory":category,"associationTypeId":type_id}].
 */
extern void hs_body_add_association(HsJsonBody *body, const char *from_id,
									const char *to_id, const char *category,
									int type_id);

/* {"id":hubspot_id} as a batch/read input, and the properties to read */
extern void hs_body_add_read(HsJsonBody *body, const char *hubspot_id);
extern void hs_body_set_properties(HsJsonBody *body, int nnames,
								   const char *const *names);

/* Limit and usage of a HubSpot-defined object type's pipelines ("0-3"). */
extern bool hs_parse_pipeline_limit(const char *body, size_t len,
									const char *object_type_id,
									long *limit, long *usage);

/* A search body: property IN values, without_property not set (or NULL). */
extern char *hs_search_body(const char *property, int nvalues,
							const char *const *values,
							const char *without_property, int limit);

/* {"from":{"id":f},"to":[{"id":t}]}: removes an association (v4 archive) */
extern void hs_body_add_association_archive(HsJsonBody *body,
											const char *from_id,
											const char *to_id);

/* Serialise (unformatted) and free the cJSON tree. */
extern char *hs_body_finish(HsJsonBody *body);

typedef struct HsResultItem
{
	char	   *key;			/* value of the match property (see below) */
	char	   *hubspot_id;		/* "id" of the result */
	bool		is_new;			/* "new" flag of an upsert result */
} HsResultItem;

typedef struct HsErrorItem
{
	int			status;			/* numeric status, 0 if absent/unparsable */
	char	   *category;		/* "" if absent */
	char	   *message;		/* "" if absent */
	int			nids;
	char	  **ids;			/* context.ids[] (or context.id[]) values */
} HsErrorItem;

typedef struct HsBatchResult
{
	int			nresults;
	HsResultItem *results;
	int			nerrors;
	HsErrorItem *errors;
} HsBatchResult;

/*
 * Parse a 200/201/207 batch answer.  key_property names the property whose
 * value becomes HsResultItem.key (the upsert id property); when NULL, the
 * result's "id" is used as key.  Returns false, with *why set, when the body
 * is not JSON of the expected shape (no "results" array, wrong types).
 */
extern bool hs_parse_batch(const char *body, size_t len,
						   const char *key_property, HsBatchResult *out,
						   const char **why);

/* One property's value per result of a batch/read or search answer. */
extern bool hs_parse_property(const char *body, size_t len,
							  const char *property, int *n, char ***ids,
							  char ***values);

/* Reading back: associations (v4 batch/read), a batch/read by a unique
 * property, and a search for every record having a property, by id. */
extern bool hs_parse_association_reads(const char *body, size_t len, int *n,
									   char ***from_ids, char ***to_ids);
extern char *hs_search_having_body(const char *property, const char *after_id,
								   int limit);
extern void hs_body_set_id_property(HsJsonBody *body, const char *name);

/* Portal set-up bodies and answers (erpcrm.setup_hubspot). */
extern char *hs_group_body(const char *name, const char *label);
extern char *hs_property_body(const char *name, const char *label,
							  const char *type, const char *field_type,
							  const char *group, bool unique);
extern char *hs_pipeline_body(const char *label, int nstages,
							  const char *const *stages,
							  const char *const *probabilities);
extern bool hs_parse_names(const char *body, size_t len, const char *field,
						   int *n, char ***names);
extern bool hs_parse_pipeline(const char *body, size_t len, const char *label,
							  char **id, int *nstages, char ***stage_labels,
							  char ***stage_ids);

/* Connection check (erpcrm.check_connection). */
extern bool hs_parse_fields(const char *body, size_t len, int nfields,
							const char *const *fields, char **values);
extern bool hs_parse_string_list(const char *body, size_t len,
								 const char *field, int *n, char ***values);
extern char *hs_token_info_body(const char *token);

/* One page of GET /crm/v3/owners (erpcrm.owner_id's cache). */
#define HS_OWNERS_PATH			hs_prefix(HS_FAMILY_OWNERS)
extern bool hs_parse_owners(const char *body, size_t len, int *n, char ***ids,
							char ***emails, bool **archived, char **after);

typedef struct HsError
{
	char	   *status;			/* "error" usually; "" if absent */
	char	   *message;
	char	   *category;		/* category, or errorType for 429s */
	char	   *sub_category;
	char	   *correlation_id;
	char	   *policy_name;	/* 429: TEN_SECONDLY_ROLLING, SECONDLY, DAILY */
	int			nids;			/* ids named in context.ids, if any */
	char	  **ids;
} HsError;

/*
 * Parse a HubSpot error body.  Every field is optional; missing ones are "".
 * Returns false when the body is not a JSON object (fields then all "").
 */
extern bool hs_parse_error(const char *body, size_t len, HsError *out);

/* ----------------------------------------------------------------
 * ratelimit.c: client-side limit per rolling window, 429 handling
 * ----------------------------------------------------------------
 */
/*
 * The limiter's state is the process's own unless hs_rate_use() names
 * another (one in shared memory, shared by the processes that call with
 * the same token), with a lock to take around every function below.
 */
typedef struct HsRateState HsRateState;
typedef void (*HsRateLock) (bool acquire);
extern size_t hs_rate_state_size(void);
extern void hs_rate_state_init(HsRateState *state);
extern void hs_rate_use(HsRateState *state, HsRateLock lock);

extern void hs_rate_configure(int calls_per_window, int window_ms);

/* Milliseconds to wait before the next call may start (0 = go now). */
extern long hs_rate_delay_ms(TimestampTz now);

/* The same, and when it is 0 the call is accounted at once (atomically). */
extern long hs_rate_take(TimestampTz now);

/* Account one call started at now. */
extern void hs_rate_note_call(TimestampTz now);

/* Learn from an answer's headers (remaining in window, daily remaining). */
extern void hs_rate_note_response(const HsResponse *resp, TimestampTz now);

/*
 * A 429 arrived: block calls until the time the answer implies
 * (Retry-After, else the window policy_name names).  Returns that time.
 */
extern TimestampTz hs_rate_note_429(const HsResponse *resp,
									const char *policy_name, TimestampTz now);

/* Latest header values, for erpcrm.worker; -1 where unknown. */
/* ms to wait before a search call may start; its place is taken */
extern long hs_rate_search_slot(TimestampTz now);
extern long hs_rate_window_remaining(void);
extern long hs_rate_daily_remaining(void);

/* HubSpot's next daily reset, learned from the portal's time zone. */
extern void hs_rate_set_daily_reset(TimestampTz reset, TimestampTz now);
extern TimestampTz hs_rate_daily_reset(TimestampTz now);

#endif							/* ERPCRM_HUBSPOT_H */
