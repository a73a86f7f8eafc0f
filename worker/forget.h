/*-------------------------------------------------------------------------
 *
 * forget.h
 *	  Erasure (forget.c): keys erased with erpcrm.forget() are dropped from
 *	  the batches that claim them, and the worker erases their objects in
 *	  HubSpot.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ERPCRM_FORGET_H
#define ERPCRM_FORGET_H

#include "delivery_int.h"

/* claim.c: keys of the batch with a tombstone get KO_FORGOTTEN (1.3) */
extern void erpcrm_drop_forgotten(Batch *b);

/* worker loop: carry out the erasures asked for, a few per cycle */
extern void erpcrm_erase_some(void);

#endif							/* ERPCRM_FORGET_H */
