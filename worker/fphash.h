/*-------------------------------------------------------------------------
 *
 * fphash.h
 *	  The fingerprint of what erpcrm sends for one key (fphash.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_FPHASH_H
#define ERPCRM_FPHASH_H

#include "postgres.h"

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

#endif							/* ERPCRM_FPHASH_H */
