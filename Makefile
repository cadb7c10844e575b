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

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDotEnv -fuzztime=60s ./targets/
	$(GO) test -run='^$$' -fuzz=FuzzLoaders -fuzztime=60s ./targets/
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=30s ./internal/config/

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...
