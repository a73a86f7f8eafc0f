/*-------------------------------------------------------------------------
 *
 * keyexpr.c
 *	  Key expressions of watches: checked against the watched table when
 *	  erpcrm.watch() is called (parse, analyse, coerce to text), and compiled
 *	  from their text into a ready-to-run ExprState once per backend and
 *	  trigger on the capture path, and again whenever the table changes.
 *	  The text is what survives DDL and pg_dump; the node tree stored next
 *	  to it only serves to rename columns in the text.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relation.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "rewrite/rewriteManip.h"
#include "access/attmap.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/resowner.h"
#include "utils/ruleutils.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "capture.h"

/* Reject what makes no sense in a key: system columns, whole rows. */
static bool
check_vars_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;

		if (var->varattno <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("key expression cannot use system columns or whole rows"),
					 errdetail("A key must stay the same when the row is updated in place."),
					 errhint("Use ordinary columns of the table, for example: invoice_id::text.")));
		return false;
	}
	return expression_tree_walker(node, check_vars_walker, context);
}

/*
 * Errors point into the key expression, not into the statement that called
 * erpcrm.watch().
 */
static void
key_error_callback(void *arg)
{
	const char *source = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(source);
	}
	errcontext("key expression of erpcrm.watch()");
}

/*
 * Parse the expression as a value computed from one row of the table and
 * return its analysed, text-typed node tree.  Errors say what is wrong.
 * Names are resolved with the search_path in force (erpcrm pins it to
 * pg_catalog, pg_temp wherever a key is compiled).
 */
static Node *
compile_key(Relation rel, const char *source)
{
	List	   *raw;
	RawStmt    *rawstmt;
	SelectStmt *select;
	ResTarget  *target;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;
	Oid			type;
	ErrorContextCallback errcallback;

	errcallback.callback = key_error_callback;
	errcallback.arg = unconstify(char *, source);
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	raw = raw_parser(source, RAW_PARSE_PLPGSQL_EXPR);
	rawstmt = linitial_node(RawStmt, raw);
	select = (SelectStmt *) rawstmt->stmt;
	if (list_length(raw) != 1 || !IsA(select, SelectStmt) ||
		list_length(select->targetList) != 1 ||
		select->fromClause != NIL || select->whereClause != NULL ||
		select->groupClause != NIL || select->havingClause != NULL ||
		select->windowClause != NIL || select->sortClause != NIL ||
		select->distinctClause != NIL || select->limitCount != NULL ||
		select->limitOffset != NULL || select->lockingClause != NIL ||
		select->withClause != NULL || select->intoClause != NULL ||
		select->valuesLists != NIL || select->op != SETOP_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("key expression \"%s\" is not a single expression", source),
				 errhint("Give one expression over the columns of %s, for example: order_id::text or a || '/' || b.",
						 RelationGetRelationName(rel))));
	target = linitial_node(ResTarget, select->targetList);
	if (target->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("key expression \"%s\" must not name its result", source)));

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = source;
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock,
										   NULL, false, true);
	addNSItemToQuery(pstate, nsitem, true, true, true);

	expr = transformExpr(pstate, target->val, EXPR_KIND_OTHER);

	if (pstate->p_hasAggs || pstate->p_hasWindowFuncs)
		ereport(ERROR,
				(errcode(ERRCODE_GROUPING_ERROR),
				 errmsg("key expression cannot use aggregate or window functions")));
	if (pstate->p_hasTargetSRFs || expression_returns_set(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key expression cannot return a set")));
	if (checkExprHasSubLink(expr))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("key expression cannot use a subquery"),
				 errdetail("The key is computed from the changed row alone, on the ERP's write path."),
				 errhint("Compute the key from the row's own columns; put lookups into the mapping view, or give the watch a key query.")));
	check_vars_walker(expr, NULL);

	type = exprType(expr);
	expr = coerce_to_target_type(pstate, expr, type, TEXTOID, -1,
								 COERCION_EXPLICIT, COERCE_EXPLICIT_CAST, -1);
	if (expr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("key expression \"%s\" of type %s cannot be cast to text",
						source, format_type_be(type)),
				 errhint("Keys are text; add an explicit conversion.")));
	assign_expr_collations(pstate, expr);

	if (contain_volatile_functions(expr))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("key expression \"%s\" uses a volatile function", source),
				 errdetail("The key of a row must come out the same every time it is computed.")));

	error_context_stack = errcallback.previous;
	free_parsestate(pstate);
	return expr;
}

/*
 * erpcrm._compile_key(table regclass, expression text) returns text
 *
 * The analysed, text-typed node tree of a key expression over the table.
 */
PG_FUNCTION_INFO_V1(erpcrm_compile_key_v1);
Datum
erpcrm_compile_key_v1(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *source = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel;
	Node	   *expr;

	rel = relation_open(relid, AccessShareLock);
	expr = compile_key(rel, source);
	relation_close(rel, AccessShareLock);

	PG_RETURN_TEXT_P(cstring_to_text(nodeToString(expr)));
}

/* Does every column a key tree uses still exist, with the same type? */
static bool
vars_still_fit_walker(Node *node, TupleDesc desc)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var))
	{
		Var		   *var = (Var *) node;
		Form_pg_attribute att;

		if (var->varattno <= 0 || var->varattno > desc->natts)
			return true;
		att = TupleDescAttr(desc, var->varattno - 1);
		return att->attisdropped || att->atttypid != var->vartype ||
			att->atttypmod != var->vartypmod ||
			att->attcollation != var->varcollid;
	}
	return expression_tree_walker(node, vars_still_fit_walker, (void *) desc);
}

/*
 * erpcrm._rename_key(table regclass, tree text) returns text
 *
 * After a column of the table was renamed, the text of a key no longer
 * parses, but its node tree (column numbers) is still right: write the
 * tree back as text with the columns' new names.  Errors when the tree does
 * not fit the table any more (a column it used was dropped or retyped) or
 * when the new text would not mean the same key.
 */
PG_FUNCTION_INFO_V1(erpcrm_rename_key_v1);
Datum
erpcrm_rename_key_v1(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *tree = text_to_cstring(PG_GETARG_TEXT_PP(1));
	Relation	rel;
	Node	   *expr;
	Node	   *again;
	char	   *text;

	rel = relation_open(relid, AccessShareLock);
	expr = stringToNode(tree);
	if (vars_still_fit_walker(expr, RelationGetDescr(rel)))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("a column the key uses was dropped or changed its type")));
	text = deparse_expression(expr,
							  deparse_context_for(RelationGetRelationName(rel), relid),
							  false, false);
	again = compile_key(rel, text);
	if (!equal(expr, again))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("the key cannot be written with the new column names")));
	relation_close(rel, AccessShareLock);
	PG_RETURN_TEXT_P(cstring_to_text(text));
}

/* ----------------------------------------------------------------
 * Run time: watch definitions cached per backend, keyed by trigger
 *
 * The key is compiled from its text (erpcrm.watch.key_expr), against the
 * table as it is now, on first use in a backend and again after any change
 * of the table (relcache invalidation).  The text survives what column
 * numbers and OIDs do not: dropped columns that a dump and restore squeeze
 * out, a retyped column, a function recreated by a restore.
 * ----------------------------------------------------------------
 */
static HTAB *watch_cache = NULL;
static MemoryContext watch_cxt = NULL;

typedef struct WatchRow
{
	int32		mapping_id;
	Oid			source;
	char	   *key_expr;
	bool		fan_out;		/* the watch has a key query */
} WatchRow;

/*
 * Read one watch row directly (the ERP's role has no privilege on erpcrm's
 * tables, and needs none: the trigger is trusted code).  A fresh snapshot:
 * the row may have been changed by the DDL that invalidated our entry.
 */
static bool
read_watch(int32 watch_id, WatchRow *row)
{
	Oid			nsp = get_namespace_oid("erpcrm", true);
	Oid			relid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		found = false;
	AttrNumber	a_id,
				a_map,
				a_src,
				a_expr,
				a_query;
	Snapshot	snapshot;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid("watch", nsp);
	if (!OidIsValid(relid))
		return false;

	rel = table_open(relid, AccessShareLock);
	a_id = get_attnum(relid, "watch_id");
	a_map = get_attnum(relid, "mapping_id");
	a_src = get_attnum(relid, "source");
	a_expr = get_attnum(relid, "key_expr");
	a_query = get_attnum(relid, "key_query");	/* 1.2 */

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, a_id, RelationGetDescr(rel), &isnull);

		if (isnull || DatumGetInt32(d) != watch_id)
			continue;
		row->mapping_id = DatumGetInt32(heap_getattr(tup, a_map, RelationGetDescr(rel), &isnull));
		row->source = DatumGetObjectId(heap_getattr(tup, a_src, RelationGetDescr(rel), &isnull));
		d = heap_getattr(tup, a_expr, RelationGetDescr(rel), &isnull);
		row->key_expr = isnull ? NULL : TextDatumGetCString(d);
		row->fan_out = false;
		if (a_query != InvalidAttrNumber)
		{
			(void) heap_getattr(tup, a_query, RelationGetDescr(rel), &isnull);
			row->fan_out = !isnull;
		}
		found = (row->key_expr != NULL);
		break;
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);
	return found;
}

/* A change of a table makes the keys compiled against it stale. */
static void
watch_relcache_callback(Datum arg, Oid relid)
{
	HASH_SEQ_STATUS status;
	WatchEntry *entry;

	if (watch_cache == NULL)
		return;
	hash_seq_init(&status, watch_cache);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (!OidIsValid(relid) || entry->key.relid == relid || entry->source == relid)
			entry->valid = false;
}

/* A function or type a key may use changed or was dropped: rebuild all. */
static void
watch_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	watch_relcache_callback(arg, InvalidOid);
}

/*
 * Compile the key text against the watched table, in a subtransaction: a
 * key that no longer fits the table must not make the ERP's write fail.
 * Returns the tree in the caller's memory context, or NULL with *problem
 * set.
 */
static Node *
try_compile(Oid source, const char *key_expr, char **problem)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Node	   *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		int			nest = NewGUCNestLevel();
		Relation	rel;

		/* the path erpcrm.watch() compiled the key with */
		(void) set_config_option("search_path", "pg_catalog, pg_temp",
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		rel = relation_open(source, AccessShareLock);
		result = compile_key(rel, key_expr);
		relation_close(rel, NoLock);
		AtEOXact_GUC(true, nest);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		*problem = edata->message;
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/* (Re)build an entry: compile its key against the table as it is now. */
/*
 * Which columns of the table the key is computed from, when it is computed
 * from them alone: then an UPDATE that leaves these columns the same leaves
 * the key the same, and the capture trigger need not compute the old key.
 * Called in the entry's memory context.
 */
static void
key_columns(WatchEntry *entry, Node *expr)
{
	Bitmapset  *attrs = NULL;
	int			x = -1;
	int			n = 0;

	if (contain_mutable_functions(expr))
		return;
	pull_varattnos(expr, 1, &attrs);
	entry->key_cols = palloc(sizeof(AttrNumber) * Max(bms_num_members(attrs), 1));
	while ((x = bms_next_member(attrs, x)) >= 0)
	{
		AttrNumber	attno = x + FirstLowInvalidHeapAttributeNumber;

		/* a whole-row or system column: compare nothing, compute the key */
		if (attno <= 0)
			return;
		entry->key_cols[n++] = attno;
	}
	entry->nkey_cols = n;
}

static void
build_entry(WatchEntry *entry, Trigger *trigger, Relation rel)
{
	WatchRow	row;
	Node	   *expr;
	char	   *problem = NULL;
	Oid			relid = RelationGetRelid(rel);
	int32		watch_id;
	MemoryContext old;

	if (trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on %s is not an erpcrm watch",
						trigger->tgname, RelationGetRelationName(rel)),
				 errhint("Create capture triggers with erpcrm.watch().")));
	watch_id = pg_strtoint32(trigger->tgargs[0]);

	if (!read_watch(watch_id, &row))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on %s names erpcrm watch %d, which does not exist",
						trigger->tgname, RelationGetRelationName(rel), watch_id),
				 errhint("Drop the trigger and watch the table again with erpcrm.watch().")));

	/* a partition fires the trigger of its partitioned ancestor */
	if (row.source != relid)
	{
		List	   *ancestors = NIL;

		if (get_rel_relispartition(relid))
			ancestors = get_partition_ancestors(relid);
		if (!list_member_oid(ancestors, row.source))
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("trigger \"%s\" on %s belongs to erpcrm watch %d of another table",
							trigger->tgname, RelationGetRelationName(rel), watch_id),
					 errhint("Drop the trigger and watch the table with erpcrm.watch().")));
	}

	/* what an earlier build left behind */
	if (entry->cxt != NULL)
		MemoryContextDelete(entry->cxt);
	entry->cxt = AllocSetContextCreate(watch_cxt, "erpcrm watch",
									   ALLOCSET_SMALL_SIZES);
	entry->expr = NULL;
	entry->econtext = NULL;
	entry->problem = NULL;
	entry->nkey_cols = -1;
	entry->key_cols = NULL;

	entry->watch_id = watch_id;
	entry->mapping_id = row.mapping_id;
	entry->source = row.source;
	entry->built_lxid = MyProc->lxid;
	entry->valid = true;

	{
		const char *outbox = row.fan_out ? "fan_out" : "outbox";

		entry->outbox_relid = get_relname_relid(outbox,
												get_namespace_oid("erpcrm", false));
		if (!OidIsValid(entry->outbox_relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"erpcrm.%s\" does not exist", outbox),
					 errhint("Reinstall the extension with ALTER EXTENSION erpcrm UPDATE or DROP/CREATE EXTENSION.")));
		/* a fan-out watch's keys are resolved by the worker, per watch */
		entry->outbox_id = row.fan_out ? watch_id : row.mapping_id;
	}

	expr = try_compile(row.source, row.key_expr, &problem);
	if (expr != NULL && row.source != relid)
	{
		Relation	parent = table_open(row.source, AccessShareLock);
		AttrMap    *map;
		bool		found_whole_row;

		map = build_attrmap_by_name(RelationGetDescr(rel), RelationGetDescr(parent));
		expr = map_variable_attnos(expr, 1, 0, map, InvalidOid, &found_whole_row);
		table_close(parent, AccessShareLock);
	}

	old = MemoryContextSwitchTo(entry->cxt);
	if (expr == NULL)
	{
		/*
		 * The key no longer fits the table (a change erpcrm could not
		 * check).  Never fail the ERP's write: mark every key of the mapping
		 * dirty instead, which loses nothing, and say so once.
		 */
		entry->problem = pstrdup(problem);
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the key of erpcrm watch %d no longer fits table %s: %s",
						watch_id,
						quote_qualified_identifier(get_namespace_name(get_rel_namespace(row.source)),
												   get_rel_name(row.source)),
						problem),
				 errdetail("Changes of this table mark every key of the mapping for sending."),
				 errhint("Watch the table again with a key that fits: erpcrm.unwatch() and erpcrm.watch().")));
	}
	else
	{
		Expr	   *planned = expression_planner((Expr *) copyObject(expr));

		entry->expr = ExecInitExpr(planned, NULL);
		entry->econtext = CreateStandaloneExprContext();
		key_columns(entry, expr);
	}
	MemoryContextSwitchTo(old);
}

/*
 * The capture state for one trigger of one table, built on first use in this
 * backend and again when the table changes.
 */
WatchEntry *
erpcrm_watch_entry(Trigger *trigger, Relation rel)
{
	WatchEntry *entry;
	bool		found;
	WatchKey	key;

	if (watch_cache == NULL)
	{
		HASHCTL		ctl;

		watch_cxt = AllocSetContextCreate(TopMemoryContext, "erpcrm watches",
										  ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = sizeof(WatchKey);
		ctl.entrysize = sizeof(WatchEntry);
		ctl.hcxt = watch_cxt;
		watch_cache = hash_create("erpcrm watches", 64, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		CacheRegisterRelcacheCallback(watch_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, watch_syscache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, watch_syscache_callback, (Datum) 0);
	}

	memset(&key, 0, sizeof(key));
	key.tgoid = trigger->tgoid;
	key.relid = RelationGetRelid(rel);
	entry = hash_search(watch_cache, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(((char *) entry) + sizeof(WatchKey), 0,
			   sizeof(WatchEntry) - sizeof(WatchKey));
		entry->last_lxid = InvalidLocalTransactionId;
		entry->last_subxid = InvalidSubTransactionId;
	}
	/* a key that did not fit is tried again in every new transaction */
	if (!found || !entry->valid ||
		(entry->expr == NULL && entry->built_lxid != MyProc->lxid))
	{
		PG_TRY();
		{
			build_entry(entry, trigger, rel);
		}
		PG_CATCH();
		{
			entry->valid = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	return entry;
}

/*
 * The key of a row, or NULL when the expression gives NULL.  The result is
 * allocated in the entry's per-tuple context, reset by the caller.
 */
Datum
erpcrm_eval_key(WatchEntry *entry, TupleTableSlot *slot, bool *isnull)
{
	Assert(entry->expr != NULL);
	entry->econtext->ecxt_scantuple = slot;
	return ExecEvalExpr(entry->expr, entry->econtext, isnull);
}
