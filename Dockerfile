# Multi-stage build of the pipeline's executables.
FROM swift:6.1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends librdkafka-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
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
CMD ["ctr-aggregator"]
