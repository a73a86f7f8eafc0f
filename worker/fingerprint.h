/*-------------------------------------------------------------------------
 *
 * fingerprint.h
 *	  The fingerprint of what erpcrm sends for one key (fingerprint.c), and
 *	  the worker's refresh of mappings that have refresh_every (refresh.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_FINGERPRINT_H
#define ERPCRM_FINGERPRINT_H

#include "postgres.h"

#include "delivery.h"

/* Everything of a key's request that a fingerprint covers. */
typedef struct FingerprintInput
{
	int32		epoch;			/* mapping.fingerprint_epoch */
	const char *object_type;
	const char *id_property;
	const char *explicit_id;	/* hubspot_id column: the object updated */
	int			nprops;
	const char *const *names;	/* property names */
	const char *const *values;	/* their values as sent ("" for NULL) */
	int			nassoc;
	const char *const *assoc_columns;
	const char *const *assoc_to;	/* target HubSpot id, "" or NULL */
} FingerprintInput;

extern int64 erpcrm_fingerprint(const FingerprintInput *in);

/* fingerprint.c: a mapping by id, for SQL functions that run worker code */
extern MappingDef *erpcrm_mapping_by_id(int32 mapping_id, MemoryContext cxt);

/*
 * delivery.c: read these keys' rows as the worker reads them and give each
 * key's fingerprint (found[i] false: not in the view; valid[i] false: its
 * row cannot be sent).  SPI is connected and a snapshot is active.
 */
extern void erpcrm_read_fingerprints(MappingDef *mapping, int32 epoch, int n,
									 char **erp_ids, int64 *fingerprints,
									 bool *found, bool *valid);

/* refresh.c: run a little of the refresh that is due (worker) */
extern void erpcrm_refresh_some(void);

#endif							/* ERPCRM_FINGERPRINT_H */
