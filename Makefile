# clickagg: build, generate, test. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TOOLS := buf protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-gateway grpcurl gotestsum staticcheck

.PHONY: all build build-broken image tools proto proto-check lint nobench-check subjects deps deps-dev test test-chaosbreak test-unit test-e2e k8s-test fuzz fuzz-short fuzz-targets-check dev console-screenshot chaos clean

all: build

# build stamps `git describe` and the commit into the binary (package
# buildinfo: clickagg -version, clickagg_build_info, ListMembers), rather
# than rely on the toolchain's record, which GOFLAGS=-buildvcs=false turns
# off. Outside a git checkout both are empty and the binary falls back on
# what the toolchain recorded, or "unknown".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILDINFO_LDFLAGS := $(if $(VERSION),-X github.com/clickagg/clickagg/buildinfo.version=$(VERSION)) $(if $(REVISION),-X github.com/clickagg/clickagg/buildinfo.revision=$(REVISION))

build:
	$(GO) build -ldflags '$(BUILDINFO_LDFLAGS)' -o $(BIN)/clickagg ./cmd/clickagg

# build-broken builds bin/clickagg-broken, the chaos harness's negative
# controls: with -tags chaosbreak it breaks what CLICKAGG_BREAK names
# (package breakage). Never released: the release build has none of it.
build-broken:
	$(GO) build -tags chaosbreak -ldflags '$(BUILDINFO_LDFLAGS)' -o $(BIN)/clickagg-broken ./cmd/clickagg

# image builds the release image with the version and commit stamped
# (the Dockerfile builds with -buildvcs=false, so it is told both).
IMAGE ?= ghcr.io/clickagg/clickagg:$(VERSION)
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) .

# Pinned tools are built from tools/go.mod into ./bin, so every machine uses
# the same versions.
tools: $(addprefix $(BIN)/,$(TOOLS))
$(addprefix $(BIN)/,$(TOOLS)): tools/go.mod tools/go.sum
	cd tools && $(GO) build -o $(BIN)/ tool

proto: tools
	PATH=$(BIN):$$PATH $(BIN)/buf lint
	PATH=$(BIN):$$PATH $(BIN)/buf generate

# proto-check fails when buf lint fails or the committed generated code is
# not what the pinned generators produce from the committed protos.
proto-check: tools
	$(BIN)/buf lint
	rm -rf $(BIN)/_gen && mkdir -p $(BIN)/_gen
	$(BIN)/buf generate -o $(BIN)/_gen
	diff -r $(BIN)/_gen/proto/clickagg proto/clickagg -x '*.proto' || { echo "generated code is stale: run make proto" >&2; exit 1; }

lint: tools subjects
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed: $$bad" >&2; exit 1; fi
	$(GO) vet ./...
	$(BIN)/staticcheck ./...
	cd k8s && $(GO) vet ./... && $(BIN)/staticcheck ./...
	$(MAKE) --no-print-directory nobench-check
	$(GO) vet -tags chaosbreak $(CHAOSBREAK_PKGS)
	$(BIN)/staticcheck -tags chaosbreak $(CHAOSBREAK_PKGS)

# nobench-check: the release image's build (-tags nobench, Dockerfile)
# compiles and links neither the bench nor its pprof reader, nor the
# chaos harness and toxiproxy.
nobench-check:
	$(GO) vet -tags nobench ./cli/ ./cmd/clickagg
	$(BIN)/staticcheck -tags nobench ./cli/ ./cmd/clickagg
	@if $(GO) list -deps -tags nobench ./cmd/clickagg | grep -E '^github.com/(clickagg/clickagg/(bench|chaos)|google/pprof|Shopify/toxiproxy)'; then \
		echo "the nobench build (the release image) links the packages above" >&2; exit 1; fi

# subjects fails when a commit subject is over 72 characters (CONTRIBUTING.md).
# The rule starts at SUBJECTS_SINCE: the history before it has long subjects
# that cannot change, and CI's clean clone holds all of that history, so only
# the commits HEAD has and SUBJECTS_SINCE has not are read (merged branches
# too). A fixed commit, not origin/main..HEAD: on main, and in a CI checkout
# without remote branches, that range is empty or undefined. A shallow clone
# without SUBJECTS_SINCE checks HEAD's subject alone. Lengths are in
# characters (subjects hold × and →), hence LC_ALL=C.UTF-8.
SUBJECTS_SINCE := 7a70c1d87947d026ee32a62e32361e25c13f8042
subjects:
	@export LC_ALL=C.UTF-8; \
	if ! git rev-parse -q --verify HEAD >/dev/null; then echo "subjects: not a git checkout, not checked" >&2; exit 0; fi; \
	if git cat-file -e $(SUBJECTS_SINCE)^{commit} 2>/dev/null; then range=$(SUBJECTS_SINCE)..HEAD; \
	else echo "subjects: $(SUBJECTS_SINCE) not in this clone (shallow?): checking HEAD only" >&2; range="-1 HEAD"; fi; \
	bad=0; while IFS= read -r line; do s=$${line#* }; \
		if [ $${#s} -gt 72 ]; then echo "commit $${line%% *}: subject is $${#s} characters, at most 72: $$s" >&2; bad=1; fi; \
	done < <(git log --format='%h %s' $$range); exit $$bad

# deps installs what the tests start or run when missing: redis-server,
# node and test/parquetcheck's pinned npm packages (DuckDB), and SeaweedFS's
# weed, built once per machine into ~/.cache/clickagg.
deps:
	@scripts/deps.sh

# deps-dev installs only what `make dev` needs (redis-server).
deps-dev:
	@scripts/deps.sh dev

# CHAOSBREAK_PKGS are the packages with a broken branch (package
# breakage): their tests under -tags chaosbreak show that each switch
# changes what it should, beside the normal counterparts.
CHAOSBREAK_PKGS := ./breakage ./tally ./snapshot ./router ./queryd ./aggregator
CHAOSBREAK_TESTS := 'TestParse|TestSet|TestRedelivery|TestStaleOwner|TestNoAckWhileRedisStopped|TestAckBeforeRedis|TestOwnerDown|TestSnapshotIsConsistentCut|TestSnapshotOffsetApart'

test: deps tools proto-check lint build k8s-test
	$(BIN)/gotestsum --format pkgname-and-test-fails -- -race -timeout 15m $$($(GO) list ./... | grep -v /test$$)
	$(MAKE) --no-print-directory test-chaosbreak
	$(MAKE) --no-print-directory fuzz-short
	$(BIN)/gotestsum --format standard-verbose -- -timeout 40m -count=1 ./test/...

# test-chaosbreak runs the negative controls' tests and their normal
# counterparts in the chaosbreak build (a few seconds; the rest of those
# packages ran above).
test-chaosbreak: $(BIN)/gotestsum
	$(BIN)/gotestsum --format pkgname-and-test-fails -- -tags chaosbreak -race -count=1 -timeout 5m -run $(CHAOSBREAK_TESTS) $(CHAOSBREAK_PKGS)

# FUZZ_TARGETS is every fuzz target, as package:FuzzName (CONTRIBUTING.md,
# Fuzzing). go test -fuzz takes one target of one package per run, hence
# one invocation each. Their seed corpora (f.Add and testdata/fuzz) run
# with the unit tests anyway; these targets fuzz beyond them.
FUZZ_TARGETS := router:FuzzValidate \
	tally:FuzzDecodeEntry tally:FuzzEntryRoundTrip tally:FuzzRestore tally:FuzzSnapshotRoundTrip \
	archive:FuzzDecodeEntry \
	shipper:FuzzParseLine queryd:FuzzParseCount queryd:FuzzParseTop \
	authz:FuzzParsePolicy authz:FuzzParseTokens hotkey:FuzzDecodeTable
FUZZTIME ?= 10m
FUZZ_PARALLEL ?= 2

# fuzz runs each target for FUZZTIME (10m: the long runs); fuzz-short for
# 6s each, about 2 minutes in all, as CI's pass after the unit tests. A
# crasher fails the run and is written to <package>/testdata/fuzz/<target>/.
fuzz-short: FUZZTIME = 6s
fuzz fuzz-short: fuzz-targets-check
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} $${t#*:} for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$${t#*:}\$$" -fuzztime=$(FUZZTIME) -parallel=$(FUZZ_PARALLEL) ./$${t%%:*}/; \
	done

# fuzz-targets-check fails when FUZZ_TARGETS and the tree's func Fuzz...
# differ, so that a new target is fuzzed and a removed one is not asked for.
fuzz-targets-check:
	@want=$$(git grep -n -E '^func Fuzz[A-Za-z0-9_]*\(' -- '*_test.go' | sed -E 's#^(.*)/[^/]*_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9_]*)\(.*#\1:\2#' | sort); \
	have=$$(printf '%s\n' $(FUZZ_TARGETS) | sort); \
	if [ "$$want" != "$$have" ]; then echo "FUZZ_TARGETS differs from the fuzz targets in the tree:" >&2; \
		diff <(echo "$$have") <(echo "$$want") >&2; exit 1; fi

# k8s-test builds every kustomization under k8s/ and checks it against the
# Kubernetes API types and clickagg -help; k8s/ is its own Go module, so the
# kustomize and Kubernetes libraries stay out of clickagg's dependencies.
k8s-test:
	cd k8s && $(GO) test -count=1 ./...

test-unit: deps tools
	$(BIN)/gotestsum -- -race ./... -skip 'E2E'

dev: deps-dev build
	$(BIN)/clickagg dev

# console-screenshot runs the web console's browser test over a test
# cluster with a minute of traffic and writes docs/console.png (README).
console-screenshot: deps
	CLICKAGG_CONSOLE_SCREENSHOT=$(CURDIR)/docs/console.png $(GO) test -count=1 -run 'TestConsole$$' -v ./test/

# chaos is the long chaos run (docs/reliability.md): ten million clicks
# while 75 faults, five of each kind, play over the cluster `clickagg
# chaos run` starts; the output, schedule and summary, is tee'd to
# chaos-<seed>.out. About 35 minutes of workload at CHAOS_RATE, then the
# exact checks; the short run is test/chaos_test.go's TestChaosShort.
CHAOS_SEED ?= 20261208
CHAOS_EVENTS ?= 10000000
CHAOS_FAULTS ?= 75
CHAOS_RATE ?= 5000
chaos: deps build
	set -o pipefail; $(BIN)/clickagg chaos run -seed=$(CHAOS_SEED) -events=$(CHAOS_EVENTS) -faults=$(CHAOS_FAULTS) -kinds=all -rate=$(CHAOS_RATE) 2>&1 | tee chaos-$(CHAOS_SEED).out

clean:
	rm -rf $(BIN) data
