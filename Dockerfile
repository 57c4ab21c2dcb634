# Multi-stage build of the pipeline's executables, with the Swift version CI uses (6.3.x).
FROM swift:6.3.1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends librdkafka-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the manifest (or a lock file) changes, not
# on every source edit.
COPY Package.swift Package.resolve[d] ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib \
        --product ctr-aggregator --product schema-tool --product ctr-producer \
    && mkdir -p /out \
    && cp "$(swift build -c release --show-bin-path)"/ctr-aggregator \
          "$(swift build -c release --show-bin-path)"/schema-tool \
          "$(swift build -c release --show-bin-path)"/ctr-producer /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends librdkafka1 libcurl4 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 ctr
COPY --from=build /out/ /usr/local/bin/
COPY migrations /app/migrations
USER ctr
WORKDIR /app
EXPOSE 9464
# The aggregator drains on SIGTERM (up to 30 s): give it a stop grace period longer than that.
STOPSIGNAL SIGTERM
CMD ["ctr-aggregator"]
