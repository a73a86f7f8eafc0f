/*-------------------------------------------------------------------------
 *
 * erpcrm.c
 *	  Module entry point: settings, shared memory and the launcher of the
 *	  background workers are set up here when the library is preloaded.
 *
 * Without shared_preload_libraries the SQL surface and the capture triggers
 * still work (changes are recorded), but nothing is delivered.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "erpcrm.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	/* Settings are defined in every backend that loads the library. */
	erpcrm_define_settings();

	/* No function of erpcrm that changes state runs in a view's read. */
	erpcrm_install_guard();

	/* During pg_upgrade's binary upgrade nothing may run. */
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		return;

	erpcrm_request_shmem();
	erpcrm_register_launcher();
	erpcrm_install_utility_hook();
}
