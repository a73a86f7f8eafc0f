# HubSpot's rejections, each failing its own row (mock fidelity): a value
# over HubSpot's 65,536 characters, and rows HubSpot refuses with errors
# that do not say which input they are about (error_context_ids false: a
# 207's errors, and a batch refused whole, name a property, not an input;
# HubSpot does not document that they name the input).  Each bad row is
# parked as failed with HubSpot's words; the rows around it are delivered,
# nothing is lost, and nothing is retried for ever.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;

start_mock();
my $node = erpcrm_node('rejects', conf => "erpcrm.batch_size = 10\nerpcrm.max_attempts = 3\n"
	  # a retry would come long after the test: each row must fail at once
	  . "erpcrm.retry_base = '1h'\nerpcrm.retry_max = '1h'\n");
load_erp($node);
ErpcrmTest::mock_post('/_mock/config', { error_context_ids => JSON::PP::false });

sub status_of
{
	my ($key) = @_;
	return $node->safe_psql('postgres',
		"SELECT state || ' ' || coalesce(error_category, '') || ' ' || coalesce(error_message, '') FROM erpcrm.key_status('companies', '$key')");
}

sub company_names
{
	my %names;
	for my $o (@{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} })
	{
		next if $o->{archived};
		$names{ $o->{properties}{erp_id} } = $o->{properties}{name};
	}
	return \%names;
}

# --- a value too long for HubSpot, among nine good rows of one batch
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name, nip)
SELECT g, 'Firma ' || g, CASE WHEN g = 4 THEN repeat('n', 65537) END
  FROM generate_series(1, 10) g;
});
ok(wait_synced($node), 'the queue drains');
is(status_of('4'),
	'failed ERP_VALUE_TOO_LONG property "nip" is 65537 characters long; HubSpot takes at most 65536',
	'the row with a value over 65,536 characters fails with its reason');
my $names = company_names();
is(scalar(grep { defined $names->{$_} } 1 .. 10), 9, 'the nine other companies are in HubSpot');
ok(!defined $names->{4}, 'nothing of the failed row was sent');
$node->safe_psql('postgres', "UPDATE erp.customers SET nip = left(nip, 65536) WHERE id = 4");
ok(poll_until('4 synced', sub { status_of('4') eq 'synced  ' }), 'shortened in the ERP, it is delivered');
is(scalar(grep { length($_->{properties}{nip} // '') == 65536 }
	  @{ ErpcrmTest::mock_get('/_mock/objects/companies')->{results} }),
	1, 'HubSpot holds all 65,536 characters');

# --- one row HubSpot refuses in a 207 whose error names no input
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => ['15'] });
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(11, 20) g;
});
ok(wait_synced($node), 'the queue drains');
is(status_of('15'), 'failed VALIDATION_ERROR Property values were not valid: '
	  . '[{"isValid":false,"message":"Value 15 was rejected (mock reject_ids)","error":"INVALID_OPTION",'
	  . '"name":"erp_id","localizedErrorMessage":"Value 15 was rejected (mock reject_ids)"}]',
	'the one input the 207 did not return fails with HubSpot\'s error');
$names = company_names();
is(scalar(grep { defined $names->{$_} } 11 .. 20), 9, 'the nine others of the batch are delivered');

# --- two refused in one batch: sent again until each stands alone
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => [ '23', '27' ] });
my $seq = ErpcrmTest::mock_last_seq();
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(21, 30) g;
});
ok(wait_synced($node), 'the queue drains');
like(status_of('23'), qr/^failed VALIDATION_ERROR .*Value 23 was rejected/, 'the first refused row fails with its own error');
like(status_of('27'), qr/^failed VALIDATION_ERROR .*Value 27 was rejected/, 'the second with its own');
$names = company_names();
is(scalar(grep { defined $names->{$_} } 21 .. 30), 8, 'the eight others are delivered');
my @upserts = grep { $_->{path} =~ m{/companies/batch/upsert$} }
  @{ ErpcrmTest::mock_get("/_mock/requests?since=$seq")->{results} };
cmp_ok(scalar(@upserts), '<=', 8, 'in a few calls (' . scalar(@upserts) . ')');

# --- and the same when HubSpot refuses the whole batch for one input
ErpcrmTest::mock_post('/_mock/config', { upsert_whole_batch => JSON::PP::true });
ErpcrmTest::mock_post('/_mock/faults', { reject_ids => ['36'] });
$node->safe_psql('postgres', q{
INSERT INTO erp.customers (id, name) SELECT g, 'Firma ' || g FROM generate_series(31, 40) g;
});
ok(wait_synced($node), 'the queue drains');
like(status_of('36'), qr/^failed VALIDATION_ERROR .*Value 36 was rejected/, 'a batch refused whole: the bad row fails alone');
$names = company_names();
is(scalar(grep { defined $names->{$_} } 31 .. 40), 9, 'the nine others are delivered');

# every failure is in erpcrm.failures, and a fixed row goes out again
is($node->safe_psql('postgres', "SELECT string_agg(erp_id, ',' ORDER BY erp_id::int) FROM erpcrm.failures WHERE mapping = 'companies'"),
	'15,23,27,36', 'erpcrm.failures lists the four refused rows');
ErpcrmTest::mock_post('/_mock/faults', {});
$node->safe_psql('postgres', "SELECT erpcrm.requeue_failed('companies')");
ok(wait_synced($node), 'sent again once HubSpot takes them');
$names = company_names();
is(scalar(grep { defined $names->{$_} } 1 .. 40), 40, 'all forty companies are in HubSpot');
state_ok($node, 'HubSpot holds what the ERP says');

done_testing();
