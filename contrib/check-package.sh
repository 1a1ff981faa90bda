#!/usr/bin/env bash
# Builds the .deb (release, once) and checks it: its contents, the binary and
# the packaged configuration unpacked into a throw-away root, the maintainer
# scripts' syntax, and the unit (systemd-analyze, where it exists).
# Called by .ci/run after the tests; installs cargo-deb when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v dpkg-deb >/dev/null 2>&1 || { echo "dpkg-deb is needed to check the package (apt-get install dpkg)"; exit 1; }
if ! cargo deb --version >/dev/null 2>&1; then
  echo "== installing cargo-deb"
  cargo install cargo-deb --locked
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== cargo deb (release build)"
deb="$(cargo deb --locked --strip --output "$out" | tail -n 1)"
[ -f "$deb" ] || { echo "cargo deb did not report a package (got: $deb)"; exit 1; }
echo "built $deb"

fail() { echo "package check failed: $*"; exit 1; }

contents="$(dpkg-deb --contents "$deb")"
for path in ./usr/bin/vodhook ./etc/vodhook/vodhook.toml /systemd/system/vodhook.service; do
  grep -q -- "$path\$" <<<"$contents" || fail "$path is not in the package"
done
dpkg-deb --field "$deb" Package Version Depends
dpkg-deb --info "$deb" conffiles | grep -qx /etc/vodhook/vodhook.toml \
  || fail "/etc/vodhook/vodhook.toml is not a conffile"

root="$out/root"
control="$out/control"
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$control"
for script in "$control"/postinst "$control"/postrm "$control"/prerm; do
  if [ -f "$script" ]; then sh -n "$script"; fi
done
grep -c '^# Automatically added by cargo-deb' "$control/postinst" | grep -qx 2 \
  || fail "postinst should hold cargo-deb's two systemd sections once each"
grep -q 'deb-systemd-helper' "$control/postinst" || fail "postinst does not enable the unit"
if grep -q 'deb-systemd-invoke start' "$control/postinst"; then
  fail "postinst starts the unit before its configuration is edited"
fi

"$root/usr/bin/vodhook" --version | grep -q "^vodhook $(dpkg-deb --field "$deb" Version | sed 's/-[0-9]*$//')\( \|$\)" \
  || fail "the packaged binary's --version does not match the package version"
"$root/usr/bin/vodhook" check-config --config "$root/etc/vodhook/vodhook.toml" >"$out/effective.toml"
grep -qx 'path = "/var/lib/vodhook/vodhook.db"' "$out/effective.toml" \
  || fail "the packaged configuration does not keep the store in /var/lib/vodhook"

unit="$(find "$root" -name vodhook.service | head -n 1)"
grep -qx 'ExecStart=/usr/bin/vodhook serve --config /etc/vodhook/vodhook.toml' "$unit" \
  || fail "the unit does not run /usr/bin/vodhook with the packaged configuration"
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify resolves ExecStart= on the host: point it at the unpacked binary.
  sed "s|^ExecStart=/usr/bin/vodhook|ExecStart=$root/usr/bin/vodhook|" "$unit" >"$out/vodhook.service"
  systemd-analyze verify "$out/vodhook.service"
else
  echo "systemd-analyze not found: unit not verified"
fi
echo "package: $(basename "$deb") checked"
