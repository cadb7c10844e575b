# Works offline once the module cache is filled (go mod download).
GO ?= go
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all check test build demo fuzz bench

all: check test build

check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

test:
	$(GO) test -race -shuffle=on -count=1 ./...

build:
	$(GO) build -o bin/keyrotate ./cmd/keyrotate

demo:
	$(GO) run ./cmd/keyrotate demo

# Counts, not durations, as in .ci/run: with a duration, Go 1.26's fuzz
# coordinator can report its own deadline as a failure (golang/go#75804).
# About 60, 60 and 30 seconds' worth on 2 cores.
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDotEnv -fuzztime=160000x ./targets/
	$(GO) test -run='^$$' -fuzz=FuzzLoaders -fuzztime=60000x ./targets/
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=450000x ./internal/config/

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...
