#!/usr/bin/env bash
# Builds the .deb (release, once) and checks it: its contents, the binary and
# the packaged configuration unpacked into a throw-away root, the maintainer
# scripts (syntax; the unit enabled but never started), the unit
# (systemd-analyze, where it exists), and, as root, install, upgrade,
# `dpkg -r` and `dpkg -P` in a throw-away root (dpkg --root, the maintainer
# scripts run there under chroot).
# Called by .ci/run after the tests; installs cargo-deb when missing.
#
#   contrib/check-package.sh                    build the .deb, check it
#   contrib/check-package.sh --deb FILE         check a .deb built already
#   contrib/check-package.sh --postinst FILE    only: does this postinst
#                                               enable the unit without starting it?
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package check failed: $*"; exit 1; }

# The systemd parts cargo-deb adds to postinst (its autoscripts/, in
# "# Automatically added by cargo-deb" … "# End automatically added section"
# blocks). With `start = false` (and restart-after-upgrade, its default) they
# are postinst-systemd-enable and postinst-systemd-restartnostart, which runs
# `deb-systemd-invoke try-restart` on upgrades only. With `start = true` the
# second is postinst-systemd-restart (`_dh_action=start`, then
# `deb-systemd-invoke $_dh_action`), or postinst-systemd-start
# (`deb-systemd-invoke start`) without restart-after-upgrade.
cargo_deb_sections() {
  sed -n '/^# Automatically added by cargo-deb/,/^# End automatically added section/p' "$1"
}

# Fails unless the postinst FILE enables the unit and starts it nowhere.
check_postinst() {
  local postinst="$1" sections
  sections="$(cargo_deb_sections "$postinst")"
  [ "$(grep -c '^# Automatically added by cargo-deb' "$postinst")" = 2 ] \
    || fail "postinst should hold cargo-deb's two systemd sections once each"
  grep -q 'deb-systemd-helper enable' <<<"$sections" || fail "postinst does not enable the unit"
  if grep -Eq '_dh_action=|deb-systemd-invoke +("?\$|start|restart|reload)|systemctl .*(start|restart|--now)' <<<"$sections"; then
    fail "postinst starts the unit before its configuration is edited (start = true in [package.metadata.deb]?):
$(grep -En '_dh_action=|deb-systemd-invoke|systemctl' "$postinst")"
  fi
  grep -q 'deb-systemd-invoke try-restart' <<<"$sections" \
    || fail "postinst does not restart a running unit after an upgrade"
}

if [ "${1:-}" = --postinst ]; then
  [ -f "${2:-}" ] || { echo "usage: $0 --postinst FILE"; exit 2; }
  check_postinst "$2"
  echo "postinst: $2 enables the unit and does not start it"
  exit 0
fi

command -v dpkg-deb >/dev/null 2>&1 || fail "dpkg-deb is needed to check the package (apt-get install dpkg)"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

if [ "${1:-}" = --deb ]; then
  [ -f "${2:-}" ] || { echo "usage: $0 --deb FILE"; exit 2; }
  deb="$2"
else
  [ $# -eq 0 ] || { echo "usage: $0 [--deb FILE | --postinst FILE]"; exit 2; }
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb"
    cargo install cargo-deb --locked
  fi
  echo "== cargo deb (release build)"
  deb="$(cargo deb --locked --strip --output "$out" | tail -n 1)"
  [ -f "$deb" ] || fail "cargo deb did not report a package (got: $deb)"
  echo "built $deb"
fi

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
check_postinst "$control/postinst"

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

# Install, upgrade, remove and purge with dpkg --root. dpkg runs the
# maintainer scripts chrooted into that root, so it holds what they call:
# sh, coreutils, getent and useradd (adduser, a Perl program, is left out:
# postinst falls back to useradd), and stubs for systemctl,
# deb-systemd-helper and deb-systemd-invoke that log their arguments.
# /run/systemd/system exists, so cargo-deb's parts act as on a systemd host.
dpkg_lifecycle() {
  local sys="$out/sys" calls programs program lib
  calls="$sys/var/log/calls"
  mkdir -p "$sys"/usr/{bin,sbin,lib,lib64} "$sys"/etc "$sys"/run/systemd/system "$sys"/var/log \
    "$sys"/var/lib/dpkg/{info,updates,triggers} "$sys"/tmp
  for dir in bin sbin lib lib64; do ln -s "usr/$dir" "$sys/$dir"; done
  # The scripts write to /dev/null; without mknod (a container) it is a file.
  mkdir "$sys/dev"
  mknod -m 0666 "$sys/dev/null" c 1 3 2>/dev/null || : >"$sys/dev/null"
  : >"$sys/var/lib/dpkg/status"
  : >"$sys/var/lib/dpkg/available"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$sys/etc/passwd"
  printf 'root:x:0:\n' >"$sys/etc/group"
  printf 'root:*:19000:0:99999:7:::\n' >"$sys/etc/shadow"
  printf 'root:*::\n' >"$sys/etc/gshadow"
  printf 'passwd: files\ngroup: files\nshadow: files\ngshadow: files\n' >"$sys/etc/nsswitch.conf"
  if [ -f /etc/login.defs ]; then cp /etc/login.defs "$sys/etc/"; fi
  programs=(sh cat install chmod chown rm rmdir mkdir getent useradd)
  for program in "${programs[@]}"; do
    program="$(command -v "$program")" || fail "$program is needed for the dpkg --root check"
    cp -L "$program" "$sys$program"
    for lib in $(ldd "$program" 2>/dev/null | grep -o '/[^ ]*'); do
      mkdir -p "$sys$(dirname "$lib")"
      [ -e "$sys$lib" ] || cp -L "$lib" "$sys$lib"
    done
  done
  for program in systemctl deb-systemd-helper deb-systemd-invoke; do
    printf '#!/bin/sh\necho "${0##*/} $*" >>/var/log/calls\n' >"$sys/usr/bin/$program"
    chmod 0755 "$sys/usr/bin/$program"
  done
  local dpkg=(dpkg --root="$sys" --force-depends --log=/dev/null)
  local uid

  echo "== dpkg --root: install"
  "${dpkg[@]}" -i "$deb" >"$out/install.log" 2>&1 || { cat "$out/install.log"; fail "dpkg -i failed"; }
  grep -q 'installed and enabled, but not started' "$out/install.log" \
    || fail "dpkg -i did not print the post-install message: $(cat "$out/install.log")"
  grep -qx 'deb-systemd-helper enable vodhook.service' "$calls" \
    || fail "the unit was not enabled: $(cat "$calls")"
  if grep -E '^(deb-systemd-invoke|systemctl .*(start|restart|--now))' "$calls"; then
    fail "installing started the unit"
  fi
  uid="$(awk -F: '$1 == "vodhook" { print $3 }' "$sys/etc/passwd")"
  [ -n "$uid" ] || fail "postinst did not create the user vodhook"
  [ "$(stat -c '%a %u' "$sys/var/lib/vodhook")" = "750 $uid" ] \
    || fail "/var/lib/vodhook is $(stat -c '%a %u' "$sys/var/lib/vodhook"), not 750 vodhook"
  [ "$(stat -c '%a %u' "$sys/etc/vodhook/secrets.env")" = "600 0" ] \
    || fail "/etc/vodhook/secrets.env is $(stat -c '%a %u' "$sys/etc/vodhook/secrets.env"), not 600 root"
  [ -x "$sys/usr/bin/vodhook" ] || fail "/usr/bin/vodhook was not installed"

  # What a user has by now: edited secrets and configuration, events stored.
  echo 'VODHOOK_SIGN_KEY=edited' >>"$sys/etc/vodhook/secrets.env"
  echo '# edited' >>"$sys/etc/vodhook/vodhook.toml"
  echo events >"$sys/var/lib/vodhook/vodhook.db"

  echo "== dpkg --root: upgrade (the same version again)"
  : >"$calls"
  "${dpkg[@]}" --force-confold -i "$deb" >"$out/upgrade.log" 2>&1 || { cat "$out/upgrade.log"; fail "dpkg -i (upgrade) failed"; }
  if grep -q 'but not started' "$out/upgrade.log"; then fail "the post-install message repeats on upgrades"; fi
  if grep -E '^deb-systemd-invoke (start|restart) ' "$calls"; then
    fail "upgrading starts the unit (try-restart restarts it only when running)"
  fi
  grep -sqx 'VODHOOK_SIGN_KEY=edited' "$sys/etc/vodhook/secrets.env" || fail "an upgrade replaced secrets.env"
  grep -sqx '# edited' "$sys/etc/vodhook/vodhook.toml" || fail "an upgrade replaced the edited vodhook.toml"

  echo "== dpkg --root: remove"
  "${dpkg[@]}" -r vodhook >"$out/remove.log" 2>&1 || { cat "$out/remove.log"; fail "dpkg -r failed"; }
  [ ! -e "$sys/usr/bin/vodhook" ] || fail "dpkg -r left /usr/bin/vodhook"
  grep -sqx '# edited' "$sys/etc/vodhook/vodhook.toml" || fail "dpkg -r removed the configuration"
  grep -sqx 'VODHOOK_SIGN_KEY=edited' "$sys/etc/vodhook/secrets.env" || fail "dpkg -r removed secrets.env"
  grep -sqx events "$sys/var/lib/vodhook/vodhook.db" || fail "dpkg -r removed the database"

  echo "== dpkg --root: purge"
  "${dpkg[@]}" -P vodhook >"$out/purge.log" 2>&1 || { cat "$out/purge.log"; fail "dpkg -P failed"; }
  [ ! -e "$sys/etc/vodhook" ] || fail "dpkg -P left $(find "$sys/etc/vodhook")"
  grep -sqx events "$sys/var/lib/vodhook/vodhook.db" || fail "dpkg -P removed the database"
  grep -q 'the event database in /var/lib/vodhook is kept' "$out/purge.log" \
    || fail "dpkg -P did not say the database is kept: $(cat "$out/purge.log")"
}

if [ "$(id -u)" -eq 0 ] && command -v dpkg >/dev/null 2>&1 && command -v chroot >/dev/null 2>&1; then
  dpkg_lifecycle
else
  echo "not root (or no dpkg): install, remove and purge in a throw-away root not checked"
fi
echo "package: $(basename "$deb") checked"
