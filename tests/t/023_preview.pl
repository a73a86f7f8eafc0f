# erpcrm.preview() (issue 13, point 4): the requests it shows for a key of a
# paused mapping are the requests the worker sends for that key once the
# mapping is resumed: the same method, path and JSON body, associations
# included.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use ErpcrmTest;
use JSON::PP;

start_mock(config => { %{ ErpcrmTest::default_mock_config() }, log_bodies => JSON::PP::true });
my $node = erpcrm_node('preview');
load_erp($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }
my $json = JSON::PP->new->canonical;

sub state_of
{
	my ($mapping, $key) = @_;
	return sql("SELECT state FROM erpcrm.key_status('$mapping', '$key')");
}

# what preview() shows for a key: [method, path, body (decoded)], and notes
sub preview
{
	my ($mapping, $key) = @_;
	my $out = sql("SELECT json_build_object('method', method, 'path', path, 'body', body, 'note', note)"
		  . " FROM erpcrm.preview('$mapping', '$key') ORDER BY step");
	return [ map { $json->decode($_) } split /\n/, $out ];
}

# the calls the mock received after seq, to the object/association API
sub calls_since
{
	my ($seq) = @_;
	return [ grep { $_->{path} =~ m{^/crm/v[34]/(objects|associations)/} }
		  @{ ErpcrmTest::mock_get("/_mock/requests?since=$seq")->{results} } ];
}

sub last_seq { return ErpcrmTest::mock_get('/_mock/requests')->{lastSeq} // 0; }

# compare what preview showed with what was sent; "(new)" stands for the id
# HubSpot gives the new object
sub same_requests
{
	my ($shown, $sent, $new_id, $what) = @_;
	my @shown = map {
		my $b = $json->encode($_->{body});
		$b =~ s/"\(new\)"/"$new_id"/g if defined $new_id;
		[ $_->{method}, $_->{path}, $json->decode($b) ]
	} @$shown;
	my @sent = map { [ $_->{method}, $_->{path}, $_->{body} ] } @$sent;
	is_deeply(\@sent, \@shown, $what)
	  or diag("shown: " . $json->encode(\@shown) . "\nsent: " . $json->encode(\@sent));
}

# --- the contacts mapping is paused; its company reaches HubSpot
sql("SELECT erpcrm.pause('contacts')");
sql(q{INSERT INTO erp.customers (id, name, domain) VALUES (1, 'Acme', 'acme.example'), (2, 'Globex', 'globex.example');
INSERT INTO erp.persons VALUES (10, 1, 'anna@acme.example', 'Anna', 'Kowalska')});
ok(poll_until('the companies', sub { state_of('companies', '1') eq 'synced' && state_of('companies', '2') eq 'synced' }),
	'the companies are synced');

my $shown = preview('contacts', '10');
is(scalar(@$shown), 2, 'preview shows two requests: the upsert and the association');
is($shown->[0]{body}{inputs}[0]{properties}{email}, 'anna@acme.example', 'the upsert carries the row');
is($shown->[1]{body}{inputs}[0]{from}{id}, '(new)', 'the association is from the new object');
my $calls = ErpcrmTest::mock_get('/_mock/stats')->{calls};
sql("SELECT * FROM erpcrm.preview('contacts', '10')");
is(ErpcrmTest::mock_get('/_mock/stats')->{calls}, $calls, 'preview makes no HubSpot call');
is(state_of('contacts', '10'), 'pending', 'the key is still pending');

# --- resumed: the worker sends exactly that
my $seq = last_seq();
sql("SELECT erpcrm.resume('contacts')");
ok(wait_synced($node), 'the contact is delivered once resumed');
my $id = sql("SELECT erpcrm.hubspot_id('contacts', '10')");
same_requests($shown, calls_since($seq), $id, 'the worker sent what preview showed (new contact and its association)');

# --- paused again: the person moves to the other company and is renamed
sql("SELECT erpcrm.pause('contacts')");
sql("UPDATE erp.persons SET customer_id = 2, last_name = 'Nowak-Kowalska' WHERE id = 10");
$shown = preview('contacts', '10');
is_deeply([ map { $_->{path} } @$shown ],
	[ '/crm/v3/objects/contacts/batch/upsert', '/crm/v4/associations/contacts/companies/batch/archive',
	  '/crm/v4/associations/contacts/companies/batch/associate/default' ],
	'preview shows the upsert, the old association removed and the new one made');
$seq = last_seq();
sql("SELECT erpcrm.resume('contacts')");
ok(wait_synced($node), 'the change is delivered');
same_requests($shown, calls_since($seq), undef, 'the worker sent what preview showed (moved contact)');

# --- a contact whose company is not in HubSpot yet: preview says it waits
sql("SELECT erpcrm.pause('contacts'); SELECT erpcrm.pause('companies')");
sql("INSERT INTO erp.customers (id, name) VALUES (3, 'Initech'); INSERT INTO erp.persons VALUES (11, 3, 'bo\@initech.example', 'Bo', 'Lis')");
is(sql("SELECT coalesce(method, '-') || ' ' || note FROM erpcrm.preview('contacts', '11')"),
	'- waiting for companies "3" to reach HubSpot', 'preview names what the key waits for');
sql("SELECT erpcrm.resume('companies'); SELECT erpcrm.resume('contacts')");
ok(wait_synced($node), 'both are delivered once resumed');

done_testing();
