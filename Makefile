# Tycho: a plain Makefile (no autotools, no CMake).
#   make            build ./tycho
#   make run        install missing Debian packages, build, serve scripts/ on 127.0.0.1:8080
#   make test       install missing Debian packages, build, run every test (and `tycho test scripts`)
#   make test-cluster  two Tycho instances behind HAProxy with Redis sessions, under load through
#                   restarts and an upgrade (tests/cluster/test_cluster.c); also part of `make test`
#   make asan       every test again under -fsanitize=address,undefined
#   make valgrind   the integration tests with the server under valgrind
#   make bench      Tycho against nginx + Lua, a do-nothing floor, itself (A/A) and Go for
#                   pgquery/redisget/wsecho; goals at the end (~45 min; installs what it needs)
#   make fuzz       the fuzz targets (requests and backend responses with their framing oracle,
#                   WebSocket frames, PROXY protocol headers), FUZZ_SECONDS (60) each
#   make install    PREFIX=/usr/local (default) and DESTDIR: $(PREFIX)/bin/tycho, the man page
#                   $(PREFIX)/share/man/man1/tycho.1, the example scripts in
#                   $(PREFIX)/share/tycho/scripts/ and the README with docs/*.md (the Lua API,
#                   the command line, HTTP, operations, testing) in $(PREFIX)/share/doc/tycho/;
#                   the Lua prelude is compiled into the binary
#   make uninstall  removes what `make install` put there (same PREFIX and DESTDIR)
#   make clean
# `luarocks make --tree T tycho-scm-1.rockspec` runs `make all` and `make install
# PREFIX=<the rock's directory in T>`; see "Install with LuaRocks" in docs/operations.md.

# Debian packages: build and runtime. The tests also need promtool (prometheus), and real
# PostgreSQL and Redis servers (postgresql, redis-server) that they start themselves; the install
# test needs luarocks (which brings lua5.1 and liblua5.1-0-dev), curl, and man-db, groff-base
# and mandoc to render and lint the man page, and openssl to make the TLS tests' throwaway
# certificates; the fuzz target needs clang (FUZZ_PKGS). ca-certificates is the store https://
# calls verify against.
PKGS := gcc make libc6-dev pkg-config libevent-dev libhttp-parser-dev libluajit2-5.1-dev lua-cjson \
        libsqlite3-dev libpq-dev libhiredis-dev libssl-dev libjansson-dev \
        zlib1g-dev libwslay-dev ca-certificates
# clang and its libFuzzer runtime build the fuzz target, which `make test` runs briefly.
FUZZ_PKGS := clang libclang-rt-14-dev
# haproxy is the load balancer of the cluster test (CLUSTER_PKGS).
CLUSTER_PKGS := haproxy redis-server
TEST_PKGS := prometheus luarocks curl man-db groff-base mandoc postgresql redis-server \
             python3-websockets openssl $(FUZZ_PKGS) $(CLUSTER_PKGS)

BUILD ?= obj
CC ?= cc
# assert() checks the invariants the code states; off (NDEBUG) in the default, optimised build,
# on in `make asan` (and in any build given its own OPT without -DNDEBUG).
OPT ?= -O2 -g -DNDEBUG
SAN ?=
WARN := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wwrite-strings $(if $(CI),-Werror)
# Deferred (=) so that pkg-config runs after `deps` has installed the packages. Debian's
# libwslay-dev ships no pkg-config file (only CMake's), so wslay is named like http-parser.
PKG_CFLAGS = $(shell pkg-config --cflags luajit libevent libevent_openssl sqlite3 libpq hiredis libssl libcrypto jansson zlib)
PKG_LIBS = $(shell pkg-config --libs luajit libevent libevent_openssl sqlite3 libpq hiredis libssl libcrypto jansson zlib) -lhttp_parser -lwslay -lpthread -lm -ldl
CFLAGS_ALL = $(OPT) $(SAN) $(WARN) -MMD -MP -I$(BUILD) -Iserver $(PKG_CFLAGS) $(CFLAGS)
LDFLAGS_ALL = $(SAN) $(LDFLAGS)

# server/ has one folder per layer, lowest first (server/layers says which may use which).
LAYERS := core http net lua top
SRCS := $(wildcard $(LAYERS:%=server/%/*.c))
OBJS := $(SRCS:server/%.c=$(BUILD)/%.o)
LAYER_LIBS := $(LAYERS:%=$(BUILD)/lib%.a)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/unit/%)
INTEGRATION_SRCS := $(wildcard tests/integration/test_*.c)
INTEGRATION_BINS := $(INTEGRATION_SRCS:tests/integration/%.c=$(BUILD)/integration/%)
TYCHO := $(if $(filter obj,$(BUILD)),tycho,$(BUILD)/tycho)
# The cluster test (see `test-cluster` below).
CLUSTER_BIN := $(BUILD)/cluster/test_cluster
# The fuzz target (see `fuzz` below), built by clang whatever BUILD is.
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_SRCS := tests/fuzz/fuzz_request.c server/http/request.c server/http/response.c \
  server/http/framing.c server/core/arena.c \
  server/core/buf.c
FUZZ_BIN := obj-fuzz/fuzz_request
FUZZ_RESPONSE_SRCS := tests/fuzz/fuzz_response.c server/http/framing.c
FUZZ_RESPONSE_BIN := obj-fuzz/fuzz_response
FUZZ_WS_SRCS := tests/fuzz/fuzz_ws.c server/http/ws.c server/core/buf.c
FUZZ_WS_BIN := obj-fuzz/fuzz_ws
FUZZ_PROXYPROTO_SRCS := tests/fuzz/fuzz_proxyproto.c server/core/proxyproto.c
FUZZ_PROXYPROTO_BIN := obj-fuzz/fuzz_proxyproto
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=undefined -Iserver

.PHONY: all deps build run test test-cluster check unit integration asan valgrind bench fuzz \
        clean install uninstall

all: deps
	@$(MAKE) --no-print-directory build

build: $(TYCHO)

# Installs what is missing (as root), or prints the exact command to run.
deps:
	@missing=""; \
	for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || exit 1; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing"; \
	    exit 1; \
	  fi; \
	fi

$(TYCHO): $(OBJS)
	$(CC) $(LDFLAGS_ALL) -o $@ $(OBJS) $(PKG_LIBS)

$(BUILD)/%.o: server/%.c | $(BUILD)/prelude_lua.h $(BUILD)/web_lua.h $(BUILD)/testing_lua.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

# One static library per layer: a unit test links its own module's objects and the layers
# below as archives, so a call into a higher layer (or a sibling it did not name) fails to link.
define layer_lib
$(BUILD)/lib$(1).a: $(filter $(BUILD)/$(1)/%,$(OBJS))
	rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach l,$(LAYERS),$(eval $(call layer_lib,$(l))))
BELOW_core :=
BELOW_http := core
BELOW_net := http core
BELOW_lua := net http core
BELOW_top := lua net http core

# The Lua halves (lua/prelude.lua: the request path; lua/web.lua: sessions, CORS and the
# other web helpers; top/testing.lua: `tycho test`),
# compiled into the binary as C strings: X.lua -> X_lua.h: tycho_X_lua[].
LUA_HEADERS := $(BUILD)/prelude_lua.h $(BUILD)/web_lua.h $(BUILD)/testing_lua.h
.SECONDARY: $(LUA_HEADERS)   # made by a pattern rule, but kept: objects depend on them
vpath %.lua server/lua server/top
$(BUILD)/%_lua.h: %.lua | $(BUILD)
	{ echo 'static const char tycho_$*_lua[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } > $@

$(BUILD):
	mkdir -p $@

# What each unit test links: its module's objects (LAYER/NAME), then the layers below.
UNIT_MODULE_test_arena := core/arena
UNIT_MODULE_test_buf := core/buf
UNIT_MODULE_test_mq := core/mq
UNIT_MODULE_test_pool := core/pool
UNIT_MODULE_test_router := http/router
UNIT_MODULE_test_connpool := net/connpool net/lookup
UNIT_MODULE_test_tls_client := net/tls_client
UNIT_MODULE_test_http := http/request http/response http/framing
UNIT_MODULE_test_gzip := http/gzip http/request http/response http/framing
UNIT_MODULE_test_ws := http/ws http/request http/response http/framing
UNIT_MODULE_test_proxies := core/proxies
UNIT_MODULE_test_proxyproto := core/proxyproto
UNIT_MODULE_test_oracle :=
unit_objs = $(UNIT_MODULE_$(1):%=$(BUILD)/%.o)
unit_libs = $(foreach l,$(BELOW_$(firstword $(subst /, ,$(UNIT_MODULE_$(1))))),$(BUILD)/lib$(l).a)
.SECONDEXPANSION:
$(BUILD)/unit/test_%: tests/unit/test_%.c $$(call unit_objs,test_$$*) $$(call unit_libs,test_$$*) \
                      tests/harness.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itests $(LDFLAGS_ALL) -o $@ $< $(call unit_objs,test_$*) \
	  $(call unit_libs,test_$*) $(PKG_LIBS)

# The PostgreSQL and Redis servers the doc examples run against (tests/docs/examples.sh).
DOC_SERVERS := $(BUILD)/docs/servers
$(DOC_SERVERS): tests/docs/servers.c tests/harness.h tests/integration/support.h tests/integration/servers.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itests $(LDFLAGS_ALL) -o $@ $<

$(BUILD)/integration/test_%: tests/integration/test_%.c tests/harness.h tests/integration/support.h tests/integration/client.h tests/integration/backend.h tests/integration/servers.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itests $(LDFLAGS_ALL) -o $@ $< -lpthread -lz -lssl -lcrypto

# Two instances behind HAProxy (contrib/haproxy.cfg, as docs/deploy.md shows it), sessions in
# Redis, a load through restarts and a --reuseport upgrade: tests/cluster/test_cluster.c.
$(CLUSTER_BIN): tests/cluster/test_cluster.c tests/harness.h tests/integration/support.h \
                tests/integration/client.h tests/integration/servers.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itests $(LDFLAGS_ALL) -o $@ $<

test-cluster:
	@$(MAKE) --no-print-directory deps PKGS="$(PKGS) $(CLUSTER_PKGS)"
	@$(MAKE) --no-print-directory $(TYCHO) $(CLUSTER_BIN)
	$(CLUSTER_BIN) ./$(TYCHO) .

run: deps
	@$(MAKE) --no-print-directory build
	./tycho scripts/

test:
	@$(MAKE) --no-print-directory deps PKGS="$(PKGS) $(TEST_PKGS)"
	@$(MAKE) --no-print-directory check

# Every suite runs even if an earlier one failed; the last line totals them all.
check: $(TYCHO) $(UNIT_BINS) $(INTEGRATION_BINS) $(FUZZ_BIN) $(FUZZ_RESPONSE_BIN) $(FUZZ_WS_BIN) \
       $(FUZZ_PROXYPROTO_BIN) $(DOC_SERVERS) $(CLUSTER_BIN)
	@OBJ_DIR=$(BUILD) DOC_SERVERS=$(DOC_SERVERS) FUZZ_BIN=$(FUZZ_BIN) FUZZ_RESPONSE_BIN=$(FUZZ_RESPONSE_BIN) \
	  FUZZ_WS_BIN=$(FUZZ_WS_BIN) FUZZ_PROXYPROTO_BIN=$(FUZZ_PROXYPROTO_BIN) \
	  FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) CLUSTER_BIN=$(CLUSTER_BIN) \
	  sh tests/run_all.sh ./$(TYCHO) $(UNIT_BINS) -- $(INTEGRATION_BINS)

unit: $(UNIT_BINS)
	@for t in $(UNIT_BINS); do $$t || exit 1; done

integration: $(TYCHO) $(INTEGRATION_BINS)
	@for t in $(INTEGRATION_BINS); do $$t ./$(TYCHO) tests/integration/app || exit 1; done

asan:
	@$(MAKE) --no-print-directory deps PKGS="$(PKGS) $(TEST_PKGS)"
	@$(MAKE) --no-print-directory check BUILD=obj-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"

valgrind:
	@$(MAKE) --no-print-directory deps PKGS="$(PKGS) $(TEST_PKGS)"
	@command -v valgrind >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -q valgrind; }
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory check \
	  TYCHO_WRAP="valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 -q"

bench: deps
	@$(MAKE) --no-print-directory build
	bash bench/run.sh ./tycho scripts/

# DESTDIR stages the files for a package; PREFIX is where they will live. No file outside
# these directories is touched, and nothing needs root unless PREFIX does.
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
MAN1DIR = $(PREFIX)/share/man/man1
DATADIR = $(PREFIX)/share/tycho
DOCDIR = $(PREFIX)/share/doc/tycho
EXAMPLES := $(wildcard scripts/*.lua)
EXAMPLE_TESTS := $(wildcard scripts/tests/*_test.lua)
DOCS := $(wildcard docs/*.md)

install: all
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(MAN1DIR)" "$(DESTDIR)$(DATADIR)/scripts/tests" \
	  "$(DESTDIR)$(DOCDIR)"
	install -m 755 $(TYCHO) "$(DESTDIR)$(BINDIR)/tycho"
	install -m 644 man/tycho.1 "$(DESTDIR)$(MAN1DIR)/tycho.1"
	install -m 644 $(EXAMPLES) "$(DESTDIR)$(DATADIR)/scripts/"
	install -m 644 $(EXAMPLE_TESTS) "$(DESTDIR)$(DATADIR)/scripts/tests/"
	install -m 644 README.md $(DOCS) "$(DESTDIR)$(DOCDIR)/"

# Removes the files by name (never a whole directory: one may hold files of the user's), then
# the directories of our own if that left them empty.
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/tycho" "$(DESTDIR)$(MAN1DIR)/tycho.1" \
	  "$(DESTDIR)$(DOCDIR)/README.md" $(DOCS:docs/%="$(DESTDIR)$(DOCDIR)/%") \
	  $(EXAMPLES:scripts/%="$(DESTDIR)$(DATADIR)/scripts/%") \
	  $(EXAMPLE_TESTS:scripts/%="$(DESTDIR)$(DATADIR)/scripts/%")
	rmdir "$(DESTDIR)$(DATADIR)/scripts/tests" "$(DESTDIR)$(DATADIR)/scripts" \
	  "$(DESTDIR)$(DATADIR)" "$(DESTDIR)$(DOCDIR)" \
	  2>/dev/null || true

clean:
	rm -rf obj obj-asan obj-fuzz tycho

-include $(OBJS:.o=.d)

# The request-path fuzz target (libFuzzer, clang, ASan + UBSan) with its framing oracle
# (tests/fuzz/oracle.h), the backend-response target (fuzz_response.c), the WebSocket frame
# path's (fuzz_ws.c) and the PROXY protocol parser's (fuzz_proxyproto.c). `make fuzz` runs each for FUZZ_SECONDS over its seeds and a corpus kept in
# obj-fuzz/; `make test` runs each for FUZZ_SMOKE_SECONDS (tests/fuzz/run.sh).
$(FUZZ_BIN): $(FUZZ_SRCS) tests/fuzz/oracle.h $(wildcard server/*/*.h)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $(FUZZ_SRCS) -lhttp_parser

$(FUZZ_RESPONSE_BIN): $(FUZZ_RESPONSE_SRCS) tests/fuzz/oracle.h $(wildcard server/*/*.h)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $(FUZZ_RESPONSE_SRCS) -lhttp_parser

$(FUZZ_WS_BIN): $(FUZZ_WS_SRCS) $(wildcard server/*/*.h)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $(FUZZ_WS_SRCS) -lwslay -lcrypto

$(FUZZ_PROXYPROTO_BIN): $(FUZZ_PROXYPROTO_SRCS) server/core/proxyproto.h
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ $(FUZZ_PROXYPROTO_SRCS)

# Each target for FUZZ_SECONDS: requests, backend responses, WebSocket frames, each with its own
# corpus.
fuzz:
	@$(MAKE) --no-print-directory deps PKGS="$(PKGS) $(FUZZ_PKGS)"
	@$(MAKE) --no-print-directory $(FUZZ_BIN) $(FUZZ_RESPONSE_BIN) $(FUZZ_WS_BIN) \
	  $(FUZZ_PROXYPROTO_BIN)
	@mkdir -p obj-fuzz/corpus obj-fuzz/corpus-response obj-fuzz/corpus-ws \
	  obj-fuzz/corpus-proxyproto
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=obj-fuzz/ obj-fuzz/corpus tests/fuzz/seeds
	$(FUZZ_RESPONSE_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=obj-fuzz/ obj-fuzz/corpus-response tests/fuzz/seeds-response
	$(FUZZ_WS_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=obj-fuzz/ obj-fuzz/corpus-ws tests/fuzz/seeds-ws
	$(FUZZ_PROXYPROTO_BIN) -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 \
	  -artifact_prefix=obj-fuzz/ obj-fuzz/corpus-proxyproto tests/fuzz/seeds-proxyproto
