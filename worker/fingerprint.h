/*-------------------------------------------------------------------------
 *
 * fingerprint.h
 *	  The mapping lookup of the SQL functions that run worker code
 *	  (fingerprint.c: erpcrm._fingerprints(); preview.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_FINGERPRINT_H
#define ERPCRM_FINGERPRINT_H

#include "postgres.h"

#include "delivery.h"

extern MappingDef *erpcrm_mapping_by_id(int32 mapping_id, MemoryContext cxt);

#endif							/* ERPCRM_FINGERPRINT_H */
