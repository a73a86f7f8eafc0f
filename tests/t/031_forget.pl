# Erasure (issue 13, point 5): erpcrm.forget(mapping, erp_id) deletes a
# person from HubSpot for good (contacts: HubSpot's GDPR delete; other
# objects: archive), removes erpcrm's traces of the key, logs the erasure
# without personal data, and keeps a tombstone so that neither an ERP update
# nor a resync brings the person back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use JSON::PP;

start_mock();
# the mock keeps the bodies of requests, to look for the erased person in them
ErpcrmTest::mock_post('/_mock/config', { log_bodies => JSON::PP::true });
my $node = erpcrm_node('forget');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }
sub contact
{
	my ($key) = @_;
	my ($o) = grep { ($_->{properties}{erp_id} // '') eq $key }
	  @{ ErpcrmTest::mock_get('/_mock/objects/contacts')->{results} };
	return $o;
}

sql(q{
INSERT INTO erp.customers (id, name, domain) VALUES (1, 'Acme', 'acme.example'), (2, 'Beta', 'beta.example');
INSERT INTO erp.persons VALUES (10, 1, 'jan.kowalski@acme.example', 'Jan', 'Kowalski'),
	(11, 1, 'anna.nowak@acme.example', 'Anna', 'Nowak');
});
ok(wait_synced($node), 'companies and contacts delivered');
my $jan = contact('10');
ok($jan, 'Jan is a contact in HubSpot');

# only an admin may erase
sql("CREATE ROLE clerk LOGIN; CREATE ROLE dpo LOGIN IN ROLE erpcrm_admin;");
my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE clerk; SELECT erpcrm.forget('contacts', '10')");
like($err, qr/permission denied/, 'a role without erpcrm_admin may not erase');
($ret, $out, $err) = $node->psql('postgres', "SET ROLE erpcrm_monitor; SELECT erpcrm.forget('contacts', '10')");
like($err, qr/permission denied/, 'nor may a monitor');

# a key in flight is refused, the others are erased
my $id = $node->safe_psql('postgres', "SET ROLE dpo; SELECT erpcrm.forget('contacts', '10')");
like($id, qr/^\d+$/, 'an erpcrm_admin erases a contact: forget() returns the erasure id');
ok(poll_until('the erasure', sub { sql("SELECT outcome FROM erpcrm.erasures WHERE erasure_id = $id") eq 'erased' }),
	'the worker erases it in HubSpot');
ok(!contact('10'), 'the contact is gone from HubSpot, not archived');
my @gdpr = grep { $_->{path} eq '/crm/v3/objects/contacts/gdpr-delete' }
  @{ ErpcrmTest::mock_get('/_mock/requests')->{results} };
is(scalar(@gdpr), 1, 'by HubSpot\'s GDPR delete');
is($gdpr[0]{status}, 204, 'which HubSpot accepted');

# erpcrm keeps no trace of the key, only its hash
is(sql("SELECT count(*) FROM erpcrm.sync_state WHERE erp_id = '10'"), '0', 'no sync state');
is(sql("SELECT count(*) FROM erpcrm.outbox WHERE erp_id = '10' OR '10' = ANY (erp_ids)"), '0', 'nothing in the outbox');
is(sql("SELECT count(*) FROM erpcrm.failures WHERE erp_id = '10'"), '0', 'no failure');
is(sql("SELECT count(*) FROM erpcrm.api_log WHERE path LIKE '%$jan->{id}%'"), '0', 'no HubSpot call names its object');
is(sql("SELECT key_hash = encode(sha256('10'), 'hex') AND requested_by = 'dpo' AND method = 'gdpr-delete'
		  FROM erpcrm.erasures WHERE erasure_id = $id"), 't',
	'erpcrm.erasures logs the erasure: who, how, and the key only as its SHA-256');
is(sql("SELECT count(*) FROM erpcrm.erasure WHERE object_ref IS NOT NULL"), '0',
	'the HubSpot id is not kept once the erasure is done');
my $log = sql("SELECT row_to_json(e)::text FROM erpcrm.erasures e");
my $hs_id = $jan->{id};
unlike($log, qr/Kowalski|jan\.kowalski|"10"|"\Q$hs_id\E"/, 'the log holds no personal data');

# neither an ERP update nor a resync brings Jan back
my $seq = ErpcrmTest::mock_last_seq();
sql("UPDATE erp.persons SET last_name = 'Kowalski-Nowak' WHERE id = 10");
sql("SELECT erpcrm.resync('contacts')");
sql("UPDATE erp.persons SET first_name = 'Anna Maria' WHERE id = 11");
ok(poll_until('Anna\'s change', sub { ((contact('11') // {})->{properties}{firstname} // '') eq 'Anna Maria' }),
	'the other contact is sent');
ok(wait_synced($node), 'synced');
ok(!contact('10'), 'the erased contact does not come back with an ERP update or a resync');
is(sql("SELECT count(*) FROM erpcrm.sync_state WHERE erp_id = '10'"), '0', 'and leaves no sync state');
my @sent = grep { $_->{path} =~ m{/contacts/batch/} } ErpcrmTest::crm_calls_since($seq);
my $json = JSON::PP->new->canonical;
ok(@sent > 0 && !grep({ !defined $_->{body} || $json->encode($_->{body}) =~ /Kowalski|"10"/ } @sent),
	'the contacts sent since (the resync, Anna) do not include the erased one');

# a company: archived (HubSpot has no GDPR delete for it); its contact is sent without the link
sql("INSERT INTO erp.persons VALUES (12, 2, 'piotr\@beta.example', 'Piotr', 'Wiśniewski')");
ok(wait_synced($node), 'Piotr delivered with his company');
$id = sql("SELECT erpcrm.forget('companies', '2')");
ok(poll_until('the company erasure', sub { sql("SELECT outcome FROM erpcrm.erasures WHERE erasure_id = $id") eq 'erased' }),
	'a company is erased');
is(sql("SELECT method FROM erpcrm.erasures WHERE erasure_id = $id"), 'archive', 'by archive');
my ($beta) = grep { ($_->{properties}{name} // '') eq 'Beta' } @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} };
ok(!$beta || $beta->{archived}, 'the company is archived in HubSpot');
sql("UPDATE erp.persons SET first_name = 'Piotr Jan' WHERE id = 12");
ok(wait_synced($node), 'a contact of the erased company is sent, without waiting for it');
is(sql("SELECT state FROM erpcrm.sync_state s JOIN erpcrm.mapping m USING (mapping_id) WHERE m.name = 'contacts' AND erp_id = '12'"),
	'synced', 'and is synced');

# a key erpcrm never sent: nothing to erase in HubSpot, a tombstone all the same
$id = sql("SELECT erpcrm.forget('products', 'never-sent')");
is(sql("SELECT outcome FROM erpcrm.erasures WHERE erasure_id = $id"), 'nothing in HubSpot to erase',
	'a key HubSpot never had is logged as such');
($ret, $out, $err) = $node->psql('postgres', "SELECT erpcrm.forget('contacts', NULL)");
like($err, qr/the key must not be NULL/, 'a NULL key is refused');

done_testing();
