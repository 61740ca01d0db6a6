# tenantctl tasks. `just` lists them.

# List the recipes.
default:
    @just --list

# Run the demo: the main job on a local database (a throwaway one if none is reachable).
demo:
    scripts/demo

# Run the whole test suite against PostgreSQL (a throwaway one if none is reachable).
test *ARGS:
    scripts/test {{ARGS}}

# Fleet benchmarks: bulk upgrade vs persistent psql sessions and Alembic (pip-installs it into
# ~/.cache/tenantctl-bench on first use), 10,000-tenant no-op runs, peak memory; then tenant
# export + import vs pg_dump + pg_restore (BENCH_ONLY=data runs only that).
bench:
    scripts/bench

# Fuzz one target (migration_name, migration_dir, config) for 60 s; needs `cargo install cargo-fuzz`, runs on stable via RUSTC_BOOTSTRAP.
fuzz TARGET:
    RUSTC_BOOTSTRAP=1 cargo fuzz run {{TARGET}} -- -max_total_time=60

# Format and lint as CI does.
lint:
    cargo fmt --check
    cargo clippy --all-targets --locked -- -D warnings

# What CI runs.
ci:
    bash .ci/run

# Build the release binary.
build:
    cargo build --release --locked

# Install the binary (cargo install) and its man pages (`man tenantctl-upgrade`), into
# MANDIR (default ~/.local/share/man/man1; /usr/local/share/man/man1 system-wide).
install MANDIR="$HOME/.local/share/man/man1":
    cargo install --path . --locked
    tenantctl manpages {{MANDIR}}
