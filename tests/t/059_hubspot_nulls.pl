# HubSpot as its schema allows (mock fidelity): the drift suite again with a
# mock that answers a requested property that is unset as null, where the
# default mock leaves it out (HubSpot's models type property values
# "string | null"; which of the two HubSpot sends is not documented).
use strict;
use warnings;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

$ENV{ERPCRM_MOCK_NULL_PROPERTIES} = 1;
my $suite = dirname(__FILE__) . '/032_drift.pl';
do $suite;
die "$suite: $@" if $@;
