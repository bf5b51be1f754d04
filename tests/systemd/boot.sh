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
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount -t tmpfs tmpfs /run
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
