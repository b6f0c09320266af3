# Sluice — the two commands a newcomer needs:
#   make demo   start a router and run unmodified ibv_rc_pingpong through it
#   make test   build everything and run every test
# Both install what they need (Debian packages) when it is missing.

SHELL := /bin/bash
SWIFT ?= swift
CC ?= cc
APT_PACKAGES := libibverbs-dev ibverbs-utils libseccomp-dev libcap-dev iproute2 etcd-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

LIB_DIR := .build/sluice
VERBS_LIB := $(LIB_DIR)/libsluice-verbs.so
VERBS_SRC := $(wildcard Sources/SluiceVerbs/*.c) $(wildcard Sources/SluiceVerbs/*.h) \
             Sources/SluiceWire/include/sluice_wire.h
VERBS_CFLAGS := -std=gnu11 -O2 -g -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
                -Wno-unused-parameter -ISources/SluiceWire/include -ISources/SluiceVerbs/include

.PHONY: all deps build lib attacks test demo bench clean help

help:
	@echo "make demo    run unmodified ibv_rc_pingpong through a Sluice router"
	@echo "make test    build and run every test"
	@echo "make bench   release build; latency, bandwidth, policy and audit costs beside baselines"
	@echo "             (QUICK=1: the short run, under a minute; BENCH_ARGS=... more sluice-bench options)"
	@echo "make build   build the router, the CLI and libsluice-verbs.so"

all: build

# Installs the Debian packages the build and the tests use, if any is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The tenant library is plain C built with the system compiler: it must not
# pull in the Swift runtime (SwiftPM's dynamic products would).
lib: $(VERBS_LIB)
$(VERBS_LIB): $(VERBS_SRC) | deps
	@mkdir -p $(LIB_DIR)
	$(CC) $(VERBS_CFLAGS) $(filter %.c,$(VERBS_SRC)) -o $@ -lpthread

# The attack suite's tenant programs (examples/attacks), plain C against
# libibverbs like any application; the tests run them with the library
# preloaded.
ATTACKS_DIR := $(LIB_DIR)/attacks
ATTACK_COMMON := examples/attacks/attack_common.c examples/attacks/attack_common.h
ATTACKS := $(patsubst examples/attacks/%.c,$(ATTACKS_DIR)/%,$(filter-out examples/attacks/attack_common.c,$(wildcard examples/attacks/*.c)))
ATTACK_CFLAGS := -std=gnu11 -O2 -g -Wall -Wextra -Werror -ISources/SluiceWire/include

attacks: $(ATTACKS)
$(ATTACKS_DIR)/%: examples/attacks/%.c $(ATTACK_COMMON) Sources/SluiceWire/include/sluice_wire.h | deps
	@mkdir -p $(ATTACKS_DIR)
	$(CC) $(ATTACK_CFLAGS) $$(pkg-config --cflags libibverbs 2>/dev/null) $< examples/attacks/attack_common.c -o $@ \
	  $$(pkg-config --libs libibverbs 2>/dev/null || echo -libverbs) -lpthread

build: deps lib
	$(SWIFT) build

test: deps lib attacks
	$(SWIFT) build --build-tests
	SLUICE_VERBS_LIB=$(abspath $(VERBS_LIB)) SLUICE_ATTACKS_DIR=$(abspath $(ATTACKS_DIR)) \
	  $(SWIFT) test --skip-build --disable-swift-testing

demo: build
	SLUICE_VERBS_LIB=$(abspath $(VERBS_LIB)) scripts/demo.sh
	SLUICE_VERBS_LIB=$(abspath $(VERBS_LIB)) scripts/demo-two-hosts.sh

bench: deps lib
	$(SWIFT) build -c release --product sluice-router
	@# The seccomp-violation trigger is for tests: never in a release build.
	@! nm .build/release/sluice-router | grep -q sluiceTestHook || { echo "release sluice-router contains a test hook"; exit 1; }
	$(SWIFT) build -c release --product sluice-bench
	.build/release/sluice-bench $(if $(filter-out 0,$(QUICK)),--quick) $(BENCH_ARGS)

clean:
	rm -rf .build
