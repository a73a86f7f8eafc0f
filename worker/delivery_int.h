/*-------------------------------------------------------------------------
 *
 * delivery_int.h
 *	  What the steps of a delivery batch share (private to worker/): the
 *	  batch and its keys, and the functions of each step.
 *
 *	  delivery.c	the batch: the steps in order, and the outcome of a key
 *	  claim.c		1. claim due keys, read their rows from the mapping view
 *	  send.c		2. send them to HubSpot (objects, archives, associations)
 *	  record.c		3. record every key's outcome and every call
 *	  pipeline.c	batches in a row: 3 and 1 of the neighbours while one
 *					batch's call is on the wire
 *
 *	  preview.c (erpcrm.preview()) and owners.c (HubSpot's owners) use the
 *	  same steps.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_DELIVERY_INT_H
#define ERPCRM_DELIVERY_INT_H

#include "postgres.h"

#include "delivery.h"
#include "hubspot.h"

/* What happened to one key. */
typedef enum KeyOutcome
{
	KO_NONE = 0,				/* not decided yet */
	KO_SYNCED,					/* written to HubSpot */
	KO_ARCHIVED,				/* archived in HubSpot (or never there) */
	KO_GONE_KEPT,				/* left the view, mapping keeps objects */
	KO_FAILED,					/* refused by HubSpot: parked */
	KO_RETRY,					/* transient: backoff */
	KO_WAIT,					/* waits for another object or the limit */
	KO_UNCHANGED,				/* HubSpot holds its content: no call (1.3) */
	KO_FORGOTTEN,				/* erased with erpcrm.forget(): dropped (1.3) */
} KeyOutcome;

typedef struct BatchKey
{
	char	   *erp_id;
	char	   *known_hubspot_id;	/* from sync_state */
	bool		in_view;
	/* from the view row */
	char	   *id_value;		/* value of the id property */
	char	   *explicit_id;	/* hubspot_id column: update this object */
	char	  **values;			/* property values, UTF-8 */
	char	  **assoc_key;		/* target erp_id per association, or NULL */
	char	  **assoc_to;		/* target HubSpot id per association */
	char	   *prev_assoc;		/* associations made before (1.1) */
	char	   *new_assoc;		/* associations made now */
	bool		is_new;			/* HubSpot created the object just now */
	bool		already_archived;	/* erpcrm archived its object before (1.2) */
	bool		searched_once;	/* a match search found nothing before (1.2) */
	ErrorData  *read_error;		/* reading its row failed (alone) */
	bool		bounded;		/* a retry that only this key needs: parked
								 * as failed after erpcrm.max_attempts */
	bool		alone_5xx;		/* sent alone, answered with a 5xx */
	bool		has_fingerprint;	/* fingerprint is the row's (1.3) */
	int64		fingerprint;
	/* outcome */
	KeyOutcome	outcome;
	char	   *hubspot_id;
	int			http_status;
	char	   *category;
	char	   *message;
	char	   *correlation_id;
	long		wait_ms;
} BatchKey;

typedef struct Batch
{
	MappingDef *mapping;
	DeliveryOutcome *outcome;
	int			nkeys;
	BatchKey   *keys;
	int			nprops;			/* view columns + association properties */
	int			nviewprops;		/* view columns only */
	char	  **prop_names;
	List	   *calls;			/* CallLog * */
	bool		links12;		/* the installed SQL records links (1.2) */
	int			ok_calls;		/* calls HubSpot answered with 2xx */
	int			split_5xx;		/* > 0: inside a split after a 5xx */
	uint64		owner_misses;	/* rows read whose owner e-mail is unknown */
	bool		fingerprints13; /* the installed SQL keeps fingerprints (1.3) */
	int			unchanged;		/* keys recorded without a call */
	bool		forget13;		/* the installed SQL keeps tombstones (1.3) */
	bool		unclaim13;		/* the installed SQL gives keys back (1.3) */
	MemoryContext cxt;			/* the batch's memory */
} Batch;

/* HubSpot's search shows new records after a few seconds */
#define ERPCRM_SEARCH_SETTLE_MS 5000

/* The message of a key HubSpot keeps failing on when it is sent alone. */
#define INPUT_FAILING "HubSpot fails on this input alone: "

/* delivery.c */
extern int	batch_limit(MappingDef *m);
extern void send_batch(Batch *b);
extern void set_outcome(BatchKey *key, KeyOutcome outcome, int status,
						const char *category, const char *message,
						const char *correlation_id);
extern char *truncate_message(const char *s);

/* claim.c: 1. claim and read */
extern bool keys_due(MappingDef *m);
extern bool claim_and_read(Batch *b, int limit);
extern void read_rows(Batch *b);
extern void init_batch(Batch *b, MappingDef *m, DeliveryOutcome *out,
					   MemoryContext cxt, int n);

/* send.c: 2. send */
extern void classify_keys(Batch *b, BatchKey **upserts, int *nup,
						  BatchKey **updates, int *nupd,
						  BatchKey **archives, int *narch);
extern void inherit_owners(Batch *b);
extern void match_existing(Batch *b, BatchKey **upserts, int *nup,
						   BatchKey **updates, int *nupd);
extern void send_objects(Batch *b, BatchKey **keys, int n, bool by_explicit);
extern void send_archives(Batch *b, BatchKey **keys, int n);
extern void send_associations(Batch *b);
extern void call_hubspot(Batch *b, const char *method, const char *path,
						 const char *body, int ninputs, HsResponse *resp);
extern char *objects_request(Batch *b, BatchKey **keys, int n,
							 bool by_explicit, char **path);
extern char *association_request(Batch *b, AssocDef *def, int a,
								 BatchKey **adds, int nadd, char **path);
extern void association_change(BatchKey *key, AssocDef *def, int a,
							   const char **to, char **old);
extern int	prop_index(Batch *b, const char *name);
extern void mark_input_failing(BatchKey *key);

/* record.c: 3. record */
extern void record_batch(Batch *b);
extern void record_calls(Batch *b);
extern Datum text_array(List *strings);

/* pipeline.c: the work done while a call of batch b is on the wire */
extern bool erpcrm_while_on_the_wire(Batch *b);

#endif							/* ERPCRM_DELIVERY_INT_H */
