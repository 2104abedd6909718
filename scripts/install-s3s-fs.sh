#!/usr/bin/env bash
# Installs s3s-fs 0.14.1 (the local and compose S3 store) into ROOT/bin,
# built with TCP_NODELAY on its connections. As published it leaves Nagle's
# algorithm on, so a response's last small write waits for the client's
# delayed ACK: one GET in two of a 160 KB part took 43-45 ms on loopback
# instead of 2, and the collector's assembly of vtest.avi's 25 parts took
# 0.3 s of a 6 s run (BENCHMARKS.md, end to end). MinIO and AWS S3 set
# TCP_NODELAY; this makes the local store behave like them.
# Usage: scripts/install-s3s-fs.sh ROOT
set -euo pipefail
dest="$1"
version=0.14.1
# The crate's checksum in the crates.io index.
sha256=aa2cc3c6802533066591b45ace771fbc30fa33fd393d5909f9a7efd2a75cb15b
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
curl -sSfL -o "$src/s3s-fs.crate" "https://static.crates.io/crates/s3s-fs/s3s-fs-$version.crate"
echo "$sha256  $src/s3s-fs.crate" | sha256sum -c --quiet
tar -xzf "$src/s3s-fs.crate" -C "$src"
main="$src/s3s-fs-$version/src/main.rs"
anchor='let conn = http_server.serve_connection(TokioIo::new(socket)'
grep -qF "$anchor" "$main"
sed -i "/$anchor/i\\        let _ = socket.set_nodelay(true);" "$main"
grep -qF 'let _ = socket.set_nodelay(true);' "$main"
cargo install --path "$src/s3s-fs-$version" --features binary --locked --root "$dest"
