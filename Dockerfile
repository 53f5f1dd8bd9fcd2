# syntax=docker/dockerfile:1
# The clickagg image: one static binary, run as uid 65532 on an empty base.
#   make image     (or: docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#                     --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/clickagg/clickagg:0.1.0 .)
# VERSION and REVISION are stamped into the binary (package buildinfo):
# clickagg -version, the clickagg_build_info metric and ListMembers say them.
# k8s/base/kustomization.yaml pins the tag the manifests deploy.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# After the sources: a new version rebuilds only from here.
ARG VERSION=unknown
ARG REVISION=unknown
# -tags nobench leaves out clickagg bench, a developer's tool (cli/doc.go).
# -buildvcs=false: the build context has no .git, so the toolchain cannot
# record the commit; REVISION says it.
RUN CGO_ENABLED=0 go build -tags nobench -trimpath -buildvcs=false \
    -ldflags="-s -w -X github.com/clickagg/clickagg/buildinfo.version=${VERSION} -X github.com/clickagg/clickagg/buildinfo.revision=${REVISION}" \
    -o /out/clickagg ./cmd/clickagg
# A user for the non-root uid, so that tools that look the user up work.
RUN echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > /out/passwd \
 && echo 'nonroot:x:65532:' > /out/group

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
COPY --from=build /out/clickagg /clickagg
USER 65532:65532
# gRPC (every role's API, health, reflection) and HTTP (/metrics, /healthz, queryd's /v1/).
EXPOSE 9090 8080
ENTRYPOINT ["/clickagg"]
