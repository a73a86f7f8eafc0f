# erpcrm: keeps HubSpot CRM fed with the data an ERP owns.
#
#   make            build the extension
#   make install    install it into the PostgreSQL that pg_config names
#   make test       set up everything (packages included) and run all suites
#   make demo       run the demo against the local HubSpot mock
#   make bench      benchmarks (prints figures)
#   make deb        the Debian package postgresql-15-erpcrm, into deb/

MODULE_big = erpcrm
EXTENSION = erpcrm
OBJS = \
	extension/erpcrm.o \
	extension/guc.o \
	extension/capture.o \
	extension/outbox.o \
	extension/keyexpr.o \
	extension/shmem.o \
	extension/setup.o \
	extension/owner.o \
	extension/portal.o \
	extension/subscribe.o \
	extension/roles.o \
	worker/worker.o \
	worker/launcher.o \
	worker/limiter.o \
	worker/delivery.o \
	worker/pipeline.o \
	worker/claim.o \
	worker/send.o \
	worker/record.o \
	worker/preview.o \
	worker/fingerprint.o \
	worker/fphash.o \
	worker/forget.o \
	worker/refresh.o \
	worker/owners.o \
	worker/reconcile.o \
	worker/pull.o \
	worker/values.o \
	worker/client.o \
	worker/activity.o \
	worker/kept.o \
	worker/backoff.o \
	hubspot/http.o \
	hubspot/json.o \
	hubspot/ratelimit.o \
	hubspot/paths.o

DATA = $(wildcard sql/erpcrm--*.sql)
PGFILEDESC = "erpcrm - ERP to HubSpot CRM sync"

PG_CPPFLAGS = -I$(srcdir)/extension -I$(srcdir)/worker -I$(srcdir)/hubspot
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-cast-function-type
SHLIB_LINK = -lcurl -lcjson

REGRESS = setup mapping capture state surface deals privileges upgrade
# suites added in 1.2, one line per line of work (keeps merges clean)
# part 1: security
REGRESS += red
# part 2: DDL, restores, watches
REGRESS += ddl
# part 3: one bad row fails alone
REGRESS += badrows
# part 4: flat cost at scale
# part 5: links, corrections, HubSpot set-up
# part 6: packaging and contract
REGRESS += preview
# 1.3, struct: the one backoff formula
REGRESS += backoff
# 1.3, the way back: subscriptions and the inbox
REGRESS += subscribe
# 1.3, the way back: filters with OR, associations
REGRESS += subscribe_more
# 1.3, security: the delivery path is the worker's
REGRESS += delivery_guard
REGRESS_OPTS = --inputdir=tests/regress --outputdir=tests/regress \
	--temp-instance=tests/regress/tmp_check \
	--temp-config=tests/regress/erpcrm.conf

EXTRA_CLEAN = tests/regress/results tests/regress/tmp_check \
	tests/regress/regression.diffs tests/regress/regression.out \
	tests/tmp_check tests/log deb

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object is rebuilt when a header changes (PGXS tracks no headers
# unless PostgreSQL was configured with --enable-depend).
$(OBJS): $(wildcard extension/*.h worker/*.h hubspot/*.h)

# -Werror is for erpcrm's own warnings.  PostgreSQL's CFLAGS and headers are
# written for the compiler it was built with (gcc on Debian): with clang,
# its complaints about gcc's flags and attributes in them are off.
ifneq ($(findstring clang,$(shell $(CC) --version 2>/dev/null | head -n 1)),)
override CFLAGS += -Wno-unknown-warning-option -Wno-ignored-optimization-argument \
	-isystem $(includedir_server)
endif

.PHONY: test demo bench deb check-regress check-tap

# One command: packages, build, install, every suite as an unprivileged user.
test:
	bash tests/run.sh

demo:
	bash tests/demo.sh

bench:
	bash tests/bench.sh

deb:
	bash tests/deb.sh

# The suites themselves (run by tests/run.sh as an unprivileged user).
check-regress:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)

check-tap:
	rm -rf tests/tmp_check
	cd tests && TESTDIR='$(CURDIR)/tests' PATH="$(bindir):$$PATH" \
	  PG_REGRESS='$(top_builddir)/src/test/regress/pg_regress' \
	  $(PROVE) $(PG_PROVE_FLAGS) -I '$(CURDIR)/tests' $(PROVE_FLAGS) $(or $(PROVE_TESTS),t/*.pl)

# Fuzzing, memory safety and the long fault runs (tests/fuzz, tests/long).
#   make fuzz            each libFuzzer harness for FUZZ_SECONDS (default 60)
#   make check-valgrind  TAP 001, 002, 007 with the server under valgrind
#   make check-long      20+20 crash rounds, a 100,000-row outage, 20 DDL rounds
FUZZ_SECONDS ?= 60
.PHONY: fuzz check-valgrind check-long

fuzz:
	$(MAKE) -C tests/fuzz run FUZZ_SECONDS=$(FUZZ_SECONDS) PG_CONFIG=$(PG_CONFIG) CC=clang

check-valgrind:
	bash tests/long/memcheck.sh

check-long:
	bash tests/long/run.sh
