/*-------------------------------------------------------------------------
 *
 * erpcrm.h
 *	  Declarations shared by the extension (settings, shared memory, capture)
 *	  and the background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_H
#define ERPCRM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define ERPCRM_VERSION "1.3"

/* ----------------------------------------------------------------
 * guc.c: settings (postgresql.conf, prefix erpcrm.)
 * ----------------------------------------------------------------
 */
extern char *erpcrm_database;
extern char *erpcrm_role;
extern char *erpcrm_hubspot_url;
extern char *erpcrm_token;
extern char *erpcrm_token_file;
extern char *erpcrm_ca_file;
extern int	erpcrm_batch_size;
extern int	erpcrm_max_calls_per_10s;
extern int	erpcrm_connect_timeout_ms;
extern int	erpcrm_request_timeout_ms;
extern int	erpcrm_retry_base_ms;
extern int	erpcrm_retry_max_ms;
extern int	erpcrm_max_attempts;
extern int	erpcrm_auth_retry_ms;
extern int	erpcrm_poll_interval_ms;
extern int	erpcrm_test_probe_pause_ms;
extern int	erpcrm_api_log_retention_min;
extern char *erpcrm_api_version;

extern void erpcrm_define_settings(void);
extern char *erpcrm_read_token(void);
extern void erpcrm_redact_also(const char *secret);

/* ----------------------------------------------------------------
 * portal.c: the HubSpot portal of this database (erpcrm.portal)
 * ----------------------------------------------------------------
 */
typedef struct ErpcrmPortalConfig
{
	char	   *hubspot_url;	/* the database's, else erpcrm.hubspot_url */
	char	   *token_file;		/* the database's, else NULL */
	int			max_calls_per_10s;	/* the database's, else the setting */
	char	   *api_version;	/* the database's, else erpcrm.api_version */
	bool		own_api_version;	/* api_version is the database's */
	bool		own;			/* a row in erpcrm.portal says so */
} ErpcrmPortalConfig;

extern void erpcrm_portal_config(ErpcrmPortalConfig *config);
extern const char *erpcrm_token_source(void);

/* ----------------------------------------------------------------
 * shmem.c: the worker's shared state, wake-up on commit
 * ----------------------------------------------------------------
 */
typedef enum ErpcrmWorkerState
{
	ERPCRM_WORKER_STOPPED = 0,
	ERPCRM_WORKER_STARTING,
	ERPCRM_WORKER_IDLE,
	ERPCRM_WORKER_SENDING,
	ERPCRM_WORKER_BACKING_OFF,
	ERPCRM_WORKER_RATE_LIMITED,
	ERPCRM_WORKER_PAUSED,
	ERPCRM_WORKER_AUTH_FAILED,
	ERPCRM_WORKER_NOT_CONFIGURED,
	ERPCRM_WORKER_STANDBY
} ErpcrmWorkerState;

#define ERPCRM_SESSION_CALLS 128

/*
 * One delivery worker's slot (one per database served).  The launcher
 * assigns it; the worker fills in the rest.  Each slot has its own mutex.
 */
typedef struct ErpcrmShared
{
	slock_t		mutex;
	bool		in_use;			/* assigned to a database by the launcher */
	bool		probe;			/* started only to see whether erpcrm is there */
	bool		no_extension;	/* the worker found no erpcrm and left */
	Oid			role_oid;		/* role the worker connects as (0: bootstrap) */
	char		database_name[NAMEDATALEN];
	pid_t		worker_pid;
	Oid			database_oid;	/* database the worker serves */
	Latch	   *worker_latch;
	ErpcrmWorkerState state;
	char		detail[256];
	TimestampTz started_at;
	TimestampTz last_wake;
	TimestampTz last_call;
	TimestampTz backoff_until;
	int64		window_remaining;
	int64		daily_remaining;
	uint64		calls;
	uint64		rate_limited;
	uint64		objects_sent;
	bool		retry_now;		/* erpcrm.retry_now(): end any back-off */
	bool		portal_changed; /* erpcrm.portal changed: read it again */
	bool		restart_at_once;	/* left for a new setting: start again now */
	uint64		wakes;			/* commits that woke the worker, so far */
	uint64		asks;			/* of those, by an erpcrm function (_wake()) */
	int			limiter;		/* index of the portal limiter used, -1 none */
	int			max_calls;		/* this database's budget per 10 s */
	/* start times of HubSpot calls made by sessions, for the worker's limiter */
	uint64		session_seq;	/* how many so far */
	TimestampTz session_calls[ERPCRM_SESSION_CALLS];
	/* the change whose handler the worker runs now (erpcrm._run_handler) */
	int64		handler_change; /* erpcrm.inbox.change_id, 0: none */
	TimestampTz handler_since;	/* when that handler began */
	/* the change whose handler the launcher stopped the worker in */
	int64		stuck_change;	/* 0: none; the next worker parks it */
	int			stuck_timeout_ms;	/* erpcrm.handler_timeout then */
	/* the API family the worker calls, and whether erpcrm.portal chose it */
	char		api_version[16];
	bool		own_api_version;
} ErpcrmShared;

/* Databases whose CREATE EXTENSION committed, for the launcher to look at. */
#define ERPCRM_PROBE_QUEUE 32

/* The launcher's shared state, and every worker slot. */
typedef struct ErpcrmCluster
{
	slock_t		mutex;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	TimestampTz launcher_started_at;
	int			wanted;			/* databases that need a worker */
	int			refused;		/* of those, how many found no free slot */
	int			nprobe;			/* databases queued to look at */
	Oid			probe_queue[ERPCRM_PROBE_QUEUE];
	bool		probe_all;		/* the queue overflowed: look at all */
	char		launcher_detail[256];	/* why no worker can start, or "" */
	Oid			hold_database;	/* DROP/ALTER DATABASE: keep off it... */
	TimestampTz hold_until;		/* ...until then */
	int			nslots;
	ErpcrmShared slots[FLEXIBLE_ARRAY_MEMBER];
} ErpcrmCluster;

extern ErpcrmCluster *erpcrm_cluster;

/* The slot of this worker process (NULL elsewhere). */
extern ErpcrmShared *erpcrm_shared;

extern void erpcrm_request_shmem(void);
/* What a transaction asks for at its commit (erpcrm_at_commit()). */
#define ERPCRM_AT_COMMIT_WAKE		0x01	/* wake this database's worker */
#define ERPCRM_AT_COMMIT_PORTAL		0x02	/* it reads erpcrm.portal again, too */
#define ERPCRM_AT_COMMIT_LAUNCHER	0x04	/* the launcher looks at this database */
#define ERPCRM_AT_COMMIT_ASKED		0x08	/* an erpcrm function woke it (_wake()) */
extern void erpcrm_at_commit(int what);
extern void erpcrm_set_state(ErpcrmWorkerState state, const char *detail);
extern void erpcrm_set_slot_state(ErpcrmShared *slot, ErpcrmWorkerState state,
								  const char *detail);
extern void erpcrm_clip(char *dst, const char *src, size_t size);
extern void erpcrm_note_session_call(TimestampTz started);
extern int	erpcrm_take_session_calls(uint64 *seen, TimestampTz *calls);
extern ErpcrmShared *erpcrm_slot_for_database(Oid dboid, bool fallback);
extern void erpcrm_notify_launcher(Oid dboid);

/* ----------------------------------------------------------------
 * owner.c: reading mapping views as the mapping's owner
 * ----------------------------------------------------------------
 */
typedef struct ErpcrmSavedUser
{
	Oid			userid;
	int			sec_context;
	int			nestlevel;
} ErpcrmSavedUser;

extern void erpcrm_as_owner_begin(Oid owner, ErpcrmSavedUser *saved);
extern void erpcrm_as_owner_end(ErpcrmSavedUser *saved);
extern void erpcrm_refuse_if_restricted(Oid fn_oid);
extern void erpcrm_install_guard(void);
extern Oid	erpcrm_asking_role(void);

/* subscribe.c: a session logs a HubSpot call of its own (setup.c) */
extern bool erpcrm_logging_own_call;

/* ----------------------------------------------------------------
 * worker/worker.c
 * ----------------------------------------------------------------
 */
extern PGDLLEXPORT void erpcrm_worker_main(Datum main_arg);

/* ----------------------------------------------------------------
 * worker/limiter.c: one rate limiter per portal, in shared memory
 * ----------------------------------------------------------------
 */
extern Size erpcrm_limiters_shmem_size(void);
extern void erpcrm_limiters_shmem_request(void);
extern void erpcrm_limiters_shmem_init(void);
extern void erpcrm_limiter_attach(const char *url, const char *token, int budget);
extern void erpcrm_limiter_detach(void);

/* ----------------------------------------------------------------
 * worker/launcher.c: one delivery worker per database
 * ----------------------------------------------------------------
 */
extern void erpcrm_register_launcher(void);
extern void erpcrm_install_utility_hook(void);
extern PGDLLEXPORT void erpcrm_launcher_main(Datum main_arg);

/* ----------------------------------------------------------------
 * roles.c: DROP ROLE and REASSIGN OWNED for the owners of erpcrm's objects
 * ----------------------------------------------------------------
 */
struct Node;
extern void erpcrm_roles_before(struct Node *parsetree);
extern void erpcrm_roles_after(struct Node *parsetree);

#endif							/* ERPCRM_H */
