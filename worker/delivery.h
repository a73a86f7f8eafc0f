/*-------------------------------------------------------------------------
 *
 * delivery.h
 *	  One delivery batch of one mapping (delivery.c), driven by the worker
 *	  loop (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_DELIVERY_H
#define ERPCRM_DELIVERY_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

typedef struct AssocDef
{
	char	   *column;			/* view column holding the target's erp_id */
	int32		target_id;		/* target mapping */
	char	   *target_name;
	char	   *target_type;	/* HubSpot object type of the target */
	char	   *target_source;	/* the target's view */
	int			type_id;		/* 0 = HubSpot's default association */
	char	   *category;
	char	   *as_property;	/* send the target's id as this property */
	bool		inherit_owner;	/* empty hubspot_owner_id: the target's owner */
} AssocDef;

typedef struct MappingDef
{
	int32		id;
	char	   *name;
	char	   *source;			/* schema-qualified, quoted relation name */
	char	   *erp_id_type;	/* SQL type of the view's erp_id column */
	char	   *object_type;
	char	   *id_property;
	bool		archive;		/* archive in HubSpot when a key leaves */
	int			batch_size;
	bool		paused;
	char	   *match_property; /* adopt HubSpot records matching on it */
	bool		v11;			/* the installed SQL is 1.1 or later */
	bool		v12;			/* the installed SQL is 1.2 or later */
	Oid			owner;			/* read the view as this role (1.1) */
	int			nassoc;
	AssocDef   *assoc;
	/* the worker's last claim of it in this cycle took a full batch */
	bool		claimed_full;
} MappingDef;

/* What one batch taught the worker about HubSpot as a whole. */
typedef struct DeliveryOutcome
{
	int			claimed;		/* keys taken (0: nothing was due) */
	int			synced;			/* keys delivered */
	bool		auth_failed;	/* 401/403: stop sending */
	char		auth_message[256];
	bool		transient;		/* HubSpot unreachable or failing */
	char		transient_message[256];
	TimestampTz blocked_until;	/* rate limited until then (0 = not) */
} DeliveryOutcome;

/*
 * pipeline.c: the turn of the mapping at position pos of order (the
 * mappings the worker delivers, in dependency order, round after round):
 * one batch, overlapped with its neighbours.  outcome->synced counts the
 * keys of the batches recorded during the turn.  The worker flushes the
 * pipeline (records what was sent, gives back what was claimed ahead; true
 * when there was any) before it does anything else, and forgets it after
 * an ERROR (the keys in flight are then recovered by erpcrm._recover).
 */
extern void erpcrm_deliver_batch(List *order, int pos, DeliveryOutcome *outcome);
extern bool erpcrm_delivery_flush(DeliveryOutcome *outcome);
extern void erpcrm_delivery_forget(void);
extern const char *erpcrm_due_relation(void);

/* One request erpcrm.preview() shows, or (method NULL) what a key waits for. */
typedef struct PreviewStep
{
	const char *method;
	char	   *path;
	char	   *body;
	char	   *note;
} PreviewStep;

extern List *erpcrm_preview_key(MappingDef *mapping, const char *erp_id,
								const char *known_hubspot_id);

/*
 * HubSpot's owners, copied into erpcrm.hubspot_owner for erpcrm.owner_id();
 * false when HubSpot did not answer (the copy stays as it was).
 */
extern bool erpcrm_refresh_owners(void);

/* owners.c: rows read whose e-mail matched no active owner */
extern uint64 erpcrm_owner_misses;

/* worker.c: the mappings and their associations, in dependency order */
extern List *erpcrm_read_mappings(MemoryContext cxt);

/* reconcile.c: one step of the oldest reconcile run; false: none to do */
extern bool erpcrm_reconcile_work(List *mappings, DeliveryOutcome *outcome);

#endif							/* ERPCRM_DELIVERY_H */
