# keyrotate as a container image: a static binary on distroless, run as the
# unprivileged user "nonroot" (uid 65532). The image has no shell and no
# package manager; the binary needs nothing from it but the CA certificates
# and time zone data that distroless/static carries.
#
#   docker build -t keyrotate .
#   docker run --rm keyrotate --help
#
# Plain Dockerfile syntax, so that docker (with or without BuildKit), Cloud
# Build, kaniko and buildah all build it. Both amd64 and arm64 images:
#   docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE --push .

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first: a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO_ENABLED=0: a static binary, which distroless/static (no libc) runs.
# -trimpath -s -w: no local paths, no symbol tables.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/keyrotate ./cmd/keyrotate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyrotate /keyrotate
USER nonroot:nonroot
ENTRYPOINT ["/keyrotate"]
# The scheduled job's command. Kubernetes and Cloud Run args replace it
# (global flags first, then the command: --log-format json rotate ...).
CMD ["rotate"]
