/*-------------------------------------------------------------------------
 *
 * fingerprint.h
 *	  Fingerprints of a batch's keys, and the mapping lookup of the SQL
 *	  functions that run worker code (fingerprint.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_FINGERPRINT_H
#define ERPCRM_FINGERPRINT_H

#include "postgres.h"

#include "delivery_int.h"

extern MappingDef *erpcrm_mapping_by_id(int32 mapping_id, MemoryContext cxt);

/*
 * The fingerprint of every key of the batch read, and the outcome
 * KO_UNCHANGED for those HubSpot holds already (1.3; claim.c, with SPI
 * connected and a snapshot active).
 */
extern void erpcrm_fingerprint_keys(Batch *b);

#endif							/* ERPCRM_FINGERPRINT_H */
