#!/bin/sh
# The systemd test harness's boot recipe (tests/systemd/sandbox.rs runs it; a copy of the
# reference recipe the project was given, so a fresh clone has it). It boots a real systemd as
# PID 1 of a new PID namespace, isolated from the host's /tmp, /var/tmp and /run, with a minimal
# target of its own and the units that touch global state masked. Booted naively, systemd
# empties the real /tmp (systemd-tmpfiles --boot), starts every installed service and ignores
# SIGTERM. Run it ONLY through:
#   container=docker unshare --pid --fork --kill-child --mount --mount-proc --propagation private boot.sh
# then talk to it with `nsenter -t <pid of its systemd> -m -p systemctl …`, put units into its
# /run/systemd/system (inside the namespace) and stop it with SIGKILL of that pid.
# The target's name, hupwatch-test.target, is how the harness recognises a systemd a killed
# test run left behind (its command line is `/lib/systemd/systemd --system --unit=hupwatch-test.target`).
set -eu
[ "$$" = 1 ] || { echo "boot.sh: must run as PID 1 of a new PID namespace (see the header)" >&2; exit 2; }
# A checkout (or target dir) under /tmp, /var/tmp or /run — a clone in /tmp — would be hidden by
# the fresh tmpfs below, and the units name the binary and venvs by their paths there. The
# harness passes those paths in HUPWATCH_TEST_KEEP (colon-separated, at most two): each is held
# open first, then bound back in its place through /proc/self/fd/N (not re-resolved by path,
# which would find the new, empty tmpfs).
p8=""; p9=""
old_ifs=$IFS; IFS=:
for p in ${HUPWATCH_TEST_KEEP:-}; do
  case "$p" in
    /tmp/*|/var/tmp/*|/run/*)
      if [ -z "$p8" ]; then p8=$p; exec 8<"$p8"
      elif [ -z "$p9" ]; then p9=$p; exec 9<"$p9"
      else echo "boot.sh: more than two paths to keep: $HUPWATCH_TEST_KEEP" >&2; exit 2; fi;;
  esac
done
IFS=$old_ifs
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount -t tmpfs tmpfs /run
if [ -n "$p8" ]; then mkdir -p "$p8"; mount --bind --no-canonicalize /proc/self/fd/8 "$p8"; exec 8<&-; fi
if [ -n "$p9" ]; then mkdir -p "$p9"; mount --bind --no-canonicalize /proc/self/fd/9 "$p9"; exec 9<&-; fi
mkdir -p /run/systemd/system
cat > /run/systemd/system/hupwatch-test.target <<T
[Unit]
Description=hupwatch test sandbox
Requires=systemd-journald.socket
After=systemd-journald.socket
AllowIsolate=yes
T
for u in systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service systemd-tmpfiles-clean.timer \
         systemd-sysctl.service systemd-sysusers.service systemd-modules-load.service systemd-remount-fs.service \
         systemd-random-seed.service ldconfig.service systemd-binfmt.service systemd-hwdb-update.service \
         systemd-firstboot.service systemd-machine-id-commit.service systemd-journal-flush.service \
         systemd-update-utmp.service systemd-logind.service systemd-timesyncd.service postgresql.service \
         postgresql@.service getty@.service console-getty.service getty-static.service e2scrub_reap.service \
         dbus.service dbus.socket systemd-pcrphase-sysinit.service systemd-pcrphase.service cron.service; do
  ln -sf /dev/null "/run/systemd/system/$u"
done
exec /lib/systemd/systemd --system --unit=hupwatch-test.target
