# A small runtime image: the dbsync binary and the PostgreSQL client tools it drives.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/dbsync /usr/local/bin/dbsync
WORKDIR /work
ENTRYPOINT ["dbsync"]
CMD ["--help"]
