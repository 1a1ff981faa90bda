#!/usr/bin/env bash
# Builds the release artifacts into dist/:
#   vodhook_<version>-1_amd64.deb          (cargo deb; see [package.metadata.deb])
#   vodhook-<version>-x86_64-linux.tar.gz   (a static glibc binary, the unit,
#                                            the configuration and the README)
# The static binary still resolves host names through glibc's NSS: /etc/hosts
# and DNS are built in, other nsswitch.conf sources (resolve, mdns, ldap, sss)
# are modules dlopen'ed from the host, usable only when they come from the
# glibc version linked here; IP addresses always work.
# Installs cargo-deb when missing. Usage: contrib/package.sh [deb|tarball]...
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="vodhook"))')"
mkdir -p dist
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(deb tarball)

for item in "${what[@]}"; do
  case "$item" in
    deb)
      cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
      cargo deb --locked --strip --output dist/
      ;;
    tarball)
      # +crt-static links glibc statically (musl is not installable here);
      # NSS stays dynamic (see the header). --target keeps the flag away from
      # build scripts and proc macros.
      target=x86_64-unknown-linux-gnu
      RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build --release --locked --target "$target"
      binary="target/$target/release/vodhook"
      if ldd "$binary" 2>&1 | grep -q '=>'; then
        echo "package: $binary is dynamically linked"; exit 1
      fi
      name="vodhook-$version-x86_64-linux"
      stage="$(mktemp -d)"
      trap 'rm -rf "$stage"' EXIT
      mkdir "$stage/$name"
      install -m 0755 "$binary" "$stage/$name/vodhook"
      strip "$stage/$name/vodhook" 2>/dev/null || true
      install -m 0644 contrib/vodhook.service README.md config.example.toml "$stage/$name/"
      install -m 0644 contrib/deb/vodhook.toml "$stage/$name/vodhook.toml"
      tar -C "$stage" --owner=0 --group=0 -czf "dist/$name.tar.gz" "$name"
      "$stage/$name/vodhook" --version
      echo "dist/$name.tar.gz"
      ;;
    *) echo "usage: $0 [deb|tarball]..."; exit 2 ;;
  esac
done
ls -l dist/
