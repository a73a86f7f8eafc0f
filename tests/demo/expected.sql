-- tests/demo/expected.sql: what HubSpot should hold, as erpcrm's mappings
-- say it, in one JSON document for tests/demo/hubspot.py: every mapping with
-- the rows of its view, its associations, the keys it keeps after they left
-- the view and the HubSpot ids it recorded; the stages setup_hubspot() made;
-- the failures.
CREATE FUNCTION pg_temp.rows_of(source regclass) RETURNS json
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	r json;
BEGIN
	EXECUTE format('SELECT COALESCE(json_agg(v), ''[]'') FROM %s v', source) INTO r;
	RETURN r;
END
$$;

SELECT json_build_object(
	'mappings', (SELECT json_agg(json_build_object(
			'name', m.name,
			'object_type', m.object_type,
			'id_property', m.id_property,
			'on_delete', m.on_delete,
			'rows', pg_temp.rows_of(m.source),
			'associations', (SELECT COALESCE(json_agg(json_build_object(
									'column', a.column_name, 'target', t.name, 'type_id', a.type_id,
									'as_property', a.as_property, 'inherit_owner', a.inherit_owner)), '[]')
							   FROM erpcrm.association a JOIN erpcrm.mapping t ON t.mapping_id = a.target_id
							  WHERE a.mapping_id = m.mapping_id),
			'kept', (SELECT COALESCE(json_agg(s.erp_id), '[]') FROM erpcrm.sync_state s
					  WHERE s.mapping_id = m.mapping_id AND m.on_delete = 'keep' AND s.state <> 'archived'),
			'hubspot_ids', (SELECT COALESCE(json_object_agg(s.erp_id, s.hubspot_id), '{}') FROM erpcrm.sync_state s
							 WHERE s.mapping_id = m.mapping_id AND s.state = 'synced' AND s.in_erp))
		ORDER BY m.mapping_id) FROM erpcrm.mapping m),
	'stages', (SELECT COALESCE(json_agg(p ORDER BY p.pipeline, p.display_order), '[]') FROM erpcrm.pipeline_stage p),
	'failures', (SELECT COALESCE(json_agg(json_build_object('mapping', f.mapping, 'erp_id', f.erp_id,
						'error_category', f.error_category, 'error_message', f.error_message)), '[]')
				   FROM erpcrm.failures f));
