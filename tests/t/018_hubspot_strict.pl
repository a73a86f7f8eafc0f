# HubSpot as it is (issue 11, point 9): the delivery suite again with a mock
# that fails a whole batch upsert for one bad input instead of answering 207.
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{ERPCRM_MOCK_UPSERT_WHOLE_BATCH} = 1;
my $suite = dirname(__FILE__) . '/001_delivery.pl';
do $suite;
die "$suite: $@" if $@;
