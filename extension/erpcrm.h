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
extern int	erpcrm_api_log_retention_min;

extern void erpcrm_define_settings(void);
extern char *erpcrm_read_token(void);

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

typedef struct ErpcrmShared
{
	slock_t		mutex;
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
	bool		role_ready;		/* erpcrm.role was seen to exist, with LOGIN */
	bool		retry_now;		/* erpcrm.retry_now(): end any back-off */
	/* start times of HubSpot calls made by sessions, for the worker's limiter */
	uint64		session_seq;	/* how many so far */
	TimestampTz session_calls[ERPCRM_SESSION_CALLS];
} ErpcrmShared;

extern ErpcrmShared *erpcrm_shared;

extern void erpcrm_request_shmem(void);
extern void erpcrm_wake_at_commit(void);
extern void erpcrm_set_state(ErpcrmWorkerState state, const char *detail);
extern void erpcrm_clip(char *dst, const char *src, size_t size);
extern void erpcrm_note_session_call(TimestampTz started);
extern int	erpcrm_take_session_calls(uint64 *seen, TimestampTz *calls);

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

/* ----------------------------------------------------------------
 * worker/worker.c
 * ----------------------------------------------------------------
 */
extern void erpcrm_register_worker(void);
extern PGDLLEXPORT void erpcrm_worker_main(Datum main_arg);

#endif							/* ERPCRM_H */
