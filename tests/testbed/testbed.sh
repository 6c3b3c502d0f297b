#!/bin/bash
# testbed.sh — a real systemd as PID 1, for credloader's end-to-end tests,
# on a machine that does not itself boot with systemd. See docs/testbed.md.
#
#   testbed.sh start STATE_DIR        boot a bed; prints the host PID of its PID 1
#   testbed.sh stop  STATE_DIR        power it off (idempotent)
#   testbed.sh exec  STATE_DIR CMD..  run CMD inside (exit code passed through)
#   testbed.sh root  STATE_DIR        print the host path of the bed's root
#
# STATE_DIR receives: pid, cgroup, console.log (and an empty mount point, mnt/).
# Env: TESTBED_CREDENTIAL_SECRET=/path  installed as the bed's credential.secret
#      TESTBED_UNMASK="a.service b.socket"  keep these units unmasked
#      TESTBED_RELEASE=host|debian12|debian13|testing (host)  the Debian release
#                                       booted: see image.sh (built on first use)
#      TESTBED_OWNER_PID=pid            stop the bed when that process is gone
#      TESTBED_BOOT_TIMEOUT=secs (30)   TESTBED_STOP_TIMEOUT=secs (10)
#
# The recipe, and why each step is there:
#  1. `script` gives the bed a pty as /dev/console, so everything PID 1 prints
#     lands in STATE_DIR/console.log for a failing test to show.
#  2. unshare mount+pid+uts+ipc+net namespaces with private propagation: nothing
#     the bed mounts, and none of its processes, hostname or sockets leak out.
#  3. As the namespace's PID 1, move into a fresh cgroup2 directory of our own and
#     unshare a cgroup namespace rooted there: systemd gets a cgroup tree it can
#     manage, and stop can find and kill every process of the bed.
#  4. Root = overlay(lowerdir=/, upper on a private tmpfs). systemd must NEVER boot
#     on the host's own root: its tmpfiles wipe /tmp. Every write the bed makes
#     (useradd, units, credentials...) lands in the tmpfs and vanishes with it.
#     With TESTBED_RELEASE another Debian's root (image.sh) is the lower layer,
#     given the host's machine id: a credential.secret made on the host is
#     bound to it (systemd-creds deletes a key file made for another id).
#  5. Fresh /proc (with the kernel-wide knobs read-only), read-only /sys, cgroup2
#     at /sys/fs/cgroup, a minimal /dev, tmpfs /run and /tmp: what PID 1 expects.
#  6. Configure through the tmpfs layer only: mask every unit a test does not need
#     (masking is what makes boot take ~1 s instead of several), a small default
#     target that requires basic.target, a volatile journal, short timeouts, and
#     optionally a throwaway credential.secret.
#  7. pivot_root into the new root, drop the old one, then `mount --make-rshared /`:
#     systemd sets up /run/credentials/UNIT in a child namespace and relies on
#     propagation; without it LoadCredential* is empty (root) or EACCES (User=).
#     Every mount uses -n: libmount must not create /run/mount/utab on the host.
#  8. Drop dangerous bounding capabilities and exec /lib/systemd/systemd with
#     container= set, so it behaves as a container's init.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# Units a test does not need. Masked inside the bed only (symlinks to /dev/null
# in the tmpfs layer). console-getty must stay masked: its vhangup kills the pty.
MASK_UNITS=(
  getty@.service serial-getty@.service console-getty.service
  container-getty@.service getty.target getty-static.service
  systemd-logind.service user@.service user-runtime-dir@.service
  dbus.socket dbus.service postgresql.service postgresql@.service cron.service
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
  e2scrub_reap.service fstrim.timer man-db.timer systemd-tmpfiles-clean.timer
  systemd-timesyncd.service systemd-networkd.service systemd-networkd.socket
  systemd-resolved.service systemd-udevd.service systemd-udevd-control.socket
  systemd-udevd-kernel.socket systemd-udev-trigger.service
  systemd-udev-settle.service systemd-modules-load.service kmod-static-nodes.service
  systemd-sysctl.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount
  proc-sys-fs-binfmt_misc.mount systemd-random-seed.service systemd-pstore.service
  systemd-firstboot.service systemd-update-utmp.service
  systemd-update-utmp-runlevel.service systemd-machine-id-commit.service
  systemd-repart.service systemd-pcrphase.service systemd-pcrphase-sysinit.service
  systemd-journald-audit.socket systemd-ask-password-console.path
  systemd-ask-password-wall.path systemd-hwdb-update.service
  systemd-journal-catalog-update.service systemd-boot-system-token.service
  systemd-remount-fs.service systemd-fsck-root.service systemd-sysusers.service
  dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount
  sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount
  cryptsetup.target veritysetup.target integritysetup.target
  # Newer than 252 (Debian 13's 257, testing's): the logind socket fails with
  # logind masked; the rest is TPM, install and console machinery.
  systemd-logind-varlink.socket tpm-udev.path ldconfig.service
  systemd-tpm2-setup.service systemd-tpm2-setup-early.service
  systemd-pcrextend.socket systemd-pcrlock.socket systemd-cryptenroll.socket
  systemd-factory-reset.socket systemd-mute-console.socket systemd-sysinstall.socket
)
# Generators the bed does not need (they only slow daemon-reload and boot down).
MASK_GENERATORS=(
  postgresql-generator systemd-sysv-generator systemd-gpt-auto-generator
  systemd-getty-generator systemd-cryptsetup-generator systemd-veritysetup-generator
  systemd-integritysetup-generator systemd-hibernate-resume-generator
  systemd-rc-local-generator
)
DROP_CAPS=-sys_module,-sys_time,-sys_rawio,-wake_alarm,-block_suspend
TARGET=testbed.target

die() { echo "testbed: $*" >&2; exit 1; }
usage() { sed -n '2,14p' "$SELF" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# Absolute STATE_DIR; only `start` creates it.
state_dir() {
  [ -n "${1:-}" ] || usage
  [ "${2:-}" = create ] && mkdir -p "$1"
  [ -d "$1" ] || die "no state directory $1"
  readlink -f "$1"
}

# The cgroup2 mount point: /sys/fs/cgroup on a unified host, often
# /sys/fs/cgroup/unified on a hybrid one.
cgroup2_mount() {
  awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo
}

# Path of our cgroup dir relative to the cgroup2 root, as /proc/PID/cgroup shows it.
cgroup_rel() {
  local cg2
  cg2=$(cgroup2_mount)
  echo "${1#"$cg2"}"
}

# True if host PID $1 is still a process of the bed whose cgroup dir is $2
# (protects against signalling a recycled PID).
pid_in_bed() {
  local pid=$1 cgdir=$2 rel line
  rel=$(cgroup_rel "$cgdir")
  line=$(grep -s '^0::' "/proc/$pid/cgroup") || return 1
  line=${line#0::}
  [ "$line" = "$rel" ] || [ "${line#"$rel"/}" != "$line" ]
}

# Host PIDs of every process in the cgroup tree $1.
bed_pids() {
  [ -d "$1" ] || return 0
  find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

# The bed's PID 1 (host PID): a process of the cgroup tree whose NSpid ends in " 1".
find_init_pid() {
  local p
  for p in $(bed_pids "$1"); do
    if grep -qsE '^NSpid:.*[[:space:]]1$' "/proc/$p/status" &&
       [ "$(awk '/^NSpid:/ { print NF }' "/proc/$p/status" 2>/dev/null)" -gt 2 ]; then
      echo "$p"; return 0
    fi
  done
  return 1
}

# PID from STATE_DIR/pid, only if it still belongs to this bed.
live_pid() {
  local st=$1 pid cgdir
  [ -f "$st/pid" ] && [ -f "$st/cgroup" ] || return 1
  pid=$(cat "$st/pid"); cgdir=$(cat "$st/cgroup")
  pid_in_bed "$pid" "$cgdir" || return 1
  echo "$pid"
}

# The bed's lower layer: / or the root of TESTBED_RELEASE (built if missing).
lower_dir() {
  local release=${TESTBED_RELEASE:-host}
  "$(dirname "$SELF")/image.sh" path "$release" ||
    die "no root for release $release (see the image.sh messages above)"
}

preflight() {
  local lower=$1
  [ "$(id -u)" = 0 ] || die "must run as root (needs CAP_SYS_ADMIN for namespaces and mounts)"
  grep -qw overlay /proc/filesystems ||
    die "overlayfs is not available (not in /proc/filesystems; modprobe overlay?)"
  local t
  for t in unshare nsenter script setpriv pivot_root mount umount findmnt; do
    command -v "$t" >/dev/null || die "missing tool: $t (util-linux)"
  done
  [ -x "$lower/lib/systemd/systemd" ] ||
    die "$lower/lib/systemd/systemd not found (is systemd installed there?)"
  [ -n "$(cgroup2_mount)" ] || die "no cgroup2 mount found in /proc/self/mountinfo"
  [ -w "$(cgroup2_mount)/cgroup.procs" ] || die "cgroup2 root $(cgroup2_mount) is not writable"
  unshare --mount --pid --fork --uts --ipc --net --cgroup true 2>/dev/null ||
    die "cannot create namespaces (unshare --mount --pid --uts --ipc --net --cgroup failed)"
}

cmd_start() {
  local st; st=$(state_dir "${1:-}" create)
  local lower; lower=$(lower_dir)
  preflight "$lower"
  if live_pid "$st" >/dev/null; then die "a bed is already running in $st"; fi
  if [ -n "${TESTBED_CREDENTIAL_SECRET:-}" ]; then
    [ -f "$TESTBED_CREDENTIAL_SECRET" ] ||
      die "TESTBED_CREDENTIAL_SECRET=$TESTBED_CREDENTIAL_SECRET is not a file"
    TESTBED_CREDENTIAL_SECRET=$(readlink -f "$TESTBED_CREDENTIAL_SECRET")
  fi

  # Identify the owner now: it may die while we boot.
  local owner_since=""
  if [ -n "${TESTBED_OWNER_PID:-}" ]; then
    owner_since=$(starttime "$TESTBED_OWNER_PID") ||
      die "TESTBED_OWNER_PID=$TESTBED_OWNER_PID is not a running process"
  fi

  local name cg2 cgdir
  name="credloader-testbed-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  cg2=$(cgroup2_mount)
  cgdir="$cg2/$name"
  mkdir "$cgdir"
  echo "$cgdir" >"$st/cgroup"
  echo "${TESTBED_RELEASE:-host} $lower" >"$st/release"
  rm -f "$st/pid" "$st/console.log"
  mkdir -p "$st/mnt"

  # Detached from the caller's session; stdio must not hold the caller's pipes.
  local inner
  inner=$(printf 'exec unshare --mount --pid --fork --uts --ipc --net --propagation private -- %q _init %q %q %q %q' \
    "$SELF" "$st" "$cgdir" "$name" "$lower")
  # TESTBED_CREDENTIAL_SECRET and TESTBED_UNMASK reach _init2 through the env.
  export TESTBED_CREDENTIAL_SECRET=${TESTBED_CREDENTIAL_SECRET:-}
  export TESTBED_UNMASK=${TESTBED_UNMASK:-}
  SHELL=/bin/bash setsid script -qfe -c "$inner" "$st/console.log" </dev/null >/dev/null 2>&1 &
  local launcher=$!
  echo "$launcher" >"$st/launcher"
  start_watchdog "$st" "$owner_since"

  local timeout=${TESTBED_BOOT_TIMEOUT:-30} deadline pid="" state=""
  deadline=$((SECONDS + timeout))
  fail() {
    echo "testbed: $*" >&2
    if [ -f "$st/console.log" ]; then
      echo "---- console log ($st/console.log) ----" >&2
      tail -n 200 "$st/console.log" >&2 || true
      echo "---- end of console log ----" >&2
    fi
    cmd_stop "$st" >/dev/null 2>&1 || true
    exit 1
  }
  # 1. PID 1 of the new namespace exists and has exec'd systemd.
  while :; do
    pid=$(find_init_pid "$cgdir") || pid=""
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] &&
       [ -S "/proc/$pid/root/run/systemd/private" ]; then
      break
    fi
    [ $SECONDS -lt $deadline ] || fail "PID 1 did not come up within ${timeout}s"
    if ! running "$launcher"; then
      fail "the bed's init stage exited before systemd started"
    fi
    sleep 0.05
  done
  echo "$pid" >"$st/pid"
  # 2. Boot finished.
  local left=$((deadline - SECONDS)); [ $left -ge 1 ] || left=1
  state=$(timeout "$left" nsenter -t "$pid" -a -- env -i PATH="$PATH" \
          systemctl is-system-running --wait 2>/dev/null) || true
  case "$state" in
    running) ;;
    degraded)
      echo "testbed: booted DEGRADED; failed units:" >&2
      (cmd_exec "$st" systemctl --failed --no-legend --no-pager) >&2 || true ;;
    *) fail "boot did not finish within ${timeout}s (state: ${state:-unknown})" ;;
  esac
  echo "$pid"
}

# True if PID $1 exists and is not a zombie (our own exited children linger as
# zombies until reaped, and kill -0 succeeds on those).
running() {
  local st
  st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Start time (in clock ticks since boot) of host PID $1: a PID plus its start
# time names a process unambiguously.
starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }                      # fields after "pid (comm) "
  set -- $stat
  echo "${20}"
}

# With TESTBED_OWNER_PID set, a small host process stops the bed once that
# process is gone: a test binary that is killed (Ctrl-C, SIGKILL, timeout)
# cannot run its destructors, and must not leave beds running.
start_watchdog() {
  local st=$1 since=$2 owner=${TESTBED_OWNER_PID:-}
  [ -n "$owner" ] || return 0
  (
    trap '' HUP INT
    while [ -f "$st/cgroup" ] && [ "$(starttime "$owner" || true)" = "$since" ]; do
      sleep 0.5
    done
    if [ -f "$st/cgroup" ]; then
      echo "owner $owner is gone; stopping the bed" >"$st/watchdog.log" 2>/dev/null || true
      "$SELF" stop "$st" >/dev/null 2>&1 || true
    fi
  ) </dev/null >/dev/null 2>&1 &
  disown
}

# PID 1 of the new pid namespace, still on the host's (privately propagated)
# mount tree. Moves into the bed's cgroup, then re-execs in a new cgroup ns.
cmd_init() {
  local st=$1 cgdir=$2 name=$3 lower=$4
  echo 0 >"$cgdir/cgroup.procs"
  exec unshare --cgroup -- "$SELF" _init2 "$st" "$cgdir" "$name" "$lower"
}

cmd_init2() {
  local st=$1 cgdir=$2 name=$3 lower=$4 console L R f
  set -E
  trap 'echo "testbed: init stage failed at line $LINENO: $BASH_COMMAND" >&2' ERR
  console=$(readlink -f /proc/self/fd/0)   # the pty `script` gave us
  L="$st/mnt"
  R="$L/root"

  # Copy-on-write root: lower = host / (or a release's root), upper = private tmpfs.
  mount -n -t tmpfs -o mode=0755 testbed-layer "$L"
  mkdir "$L/upper" "$L/work" "$R"
  mount -n -t overlay -o "lowerdir=$lower,upperdir=$L/upper,workdir=$L/work" testbed "$R"

  # API file systems.
  mount -n -t proc -o nosuid,nodev,noexec proc "$R/proc"
  for f in sys sysrq-trigger irq bus fs; do
    [ -e "$R/proc/$f" ] || continue
    mount -n --bind "$R/proc/$f" "$R/proc/$f"
    mount -n -o remount,bind,ro "$R/proc/$f"
  done
  mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
  mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"

  mount -n -t tmpfs -o mode=0755,nosuid,size=4m dev "$R/dev"
  for f in null zero full random urandom tty; do
    touch "$R/dev/$f"
    mount -n --bind "/dev/$f" "$R/dev/$f"
  done
  mkdir -m 0755 "$R/dev/pts"
  mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
  ln -s pts/ptmx "$R/dev/ptmx"
  mkdir -m 1777 "$R/dev/shm"
  mount -n -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  ln -s /proc/self/fd/0 "$R/dev/stdin"
  ln -s /proc/self/fd/1 "$R/dev/stdout"
  ln -s /proc/self/fd/2 "$R/dev/stderr"
  touch "$R/dev/console"
  mount -n --bind "$console" "$R/dev/console"
  mount -n -t tmpfs -o mode=0755,nosuid,nodev run "$R/run"
  mount -n -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"

  # Configuration, written into the tmpfs layer only.
  local E="$R/etc/systemd"
  mkdir -p "$E/system" "$E/system-generators" "$E/system.conf.d" "$E/journald.conf.d"
  for f in "${MASK_UNITS[@]}"; do
    case " ${TESTBED_UNMASK:-} " in *" $f "*) continue ;; esac
    ln -sfn /dev/null "$E/system/$f"
  done
  for f in "${MASK_GENERATORS[@]}"; do ln -sfn /dev/null "$E/system-generators/$f"; done
  cat >"$E/system/$TARGET" <<EOF
[Unit]
Description=credloader test bed
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
  ln -sfn "$TARGET" "$E/system/default.target"
  cat >"$E/system.conf.d/testbed.conf" <<EOF
[Manager]
ShowStatus=yes
DefaultTimeoutStartSec=15s
DefaultTimeoutStopSec=5s
DefaultDeviceTimeoutSec=5s
EOF
  cat >"$E/journald.conf.d/testbed.conf" <<EOF
[Journal]
Storage=volatile
RateLimitBurst=0
EOF
  echo testbed >"$R/etc/hostname"
  # Another release's root shares the host's machine id like the host's own
  # root does: credential.secret files made on the host are bound to it.
  if [ "$lower" != / ]; then
    cat /etc/machine-id >"$R/etc/machine-id"
  fi
  if [ -n "${TESTBED_CREDENTIAL_SECRET:-}" ]; then
    mkdir -p "$R/var/lib/systemd"
    rm -f "$R/var/lib/systemd/credential.secret"
    install -m 0400 -o root -g root "$TESTBED_CREDENTIAL_SECRET" \
      "$R/var/lib/systemd/credential.secret"
  fi

  # Switch roots; the old root goes away entirely.
  cd "$R"
  pivot_root . .
  umount -n -l .
  cd /
  mount -n --make-rshared /

  exec setpriv --bounding-set "$DROP_CAPS" -- \
    env -i container="$name" TERM=vt220 SYSTEMD_COLORS=0 /lib/systemd/systemd --system --unit="$TARGET"
}

cmd_stop() {
  [ -d "${1:-}" ] || { [ -n "${1:-}" ] || usage; return 0; }   # nothing to stop
  local st; st=$(state_dir "$1")
  [ -f "$st/cgroup" ] || { rm -f "$st/pid"; return 0; }
  local cgdir pid timeout=${TESTBED_STOP_TIMEOUT:-10} deadline
  cgdir=$(cat "$st/cgroup")
  case "$cgdir" in */credloader-testbed-*) ;; *) die "refusing to touch cgroup $cgdir";; esac
  pid=$(cat "$st/pid" 2>/dev/null) || pid=""
  [ -n "$pid" ] || pid=$(find_init_pid "$cgdir") || pid=""

  # Orderly poweroff first (SIGRTMIN+4), SIGKILL if it takes too long: killing
  # PID 1 of a pid namespace kills every process in it.
  if [ -n "$pid" ] && pid_in_bed "$pid" "$cgdir"; then
    kill -s RTMIN+4 "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while pid_in_bed "$pid" "$cgdir" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
    if pid_in_bed "$pid" "$cgdir"; then
      echo "testbed: PID 1 ($pid) did not power off within ${timeout}s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # Whatever is left in the cgroup tree (e.g. a half-started bed).
  if [ -d "$cgdir" ]; then
    local i
    for i in $(seq 200); do
      [ -n "$(bed_pids "$cgdir")" ] || break
      if [ -e "$cgdir/cgroup.kill" ]; then
        echo 1 >"$cgdir/cgroup.kill" 2>/dev/null || true
      else
        for pid in $(bed_pids "$cgdir"); do kill -KILL "$pid" 2>/dev/null || true; done
      fi
      sleep 0.05
    done
    for i in $(seq 100); do
      find "$cgdir" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$cgdir" ] || break
      sleep 0.05
    done
    [ ! -d "$cgdir" ] || die "could not remove cgroup $cgdir"
  fi
  # `script` exits once the namespace is gone; give it a moment to flush the log.
  local launcher
  launcher=$(cat "$st/launcher" 2>/dev/null) || launcher=""
  if [ -n "$launcher" ]; then
    for i in $(seq 40); do
      grep -qs '^script' "/proc/$launcher/cmdline" || break
      sleep 0.05
    done
  fi
  rmdir "$st/mnt" 2>/dev/null || true
  rm -f "$st/pid" "$st/cgroup" "$st/launcher"
}

cmd_exec() {
  local st; st=$(state_dir "${1:-}"); shift || true
  [ $# -gt 0 ] || usage
  local pid
  pid=$(live_pid "$st") || die "no running bed in $st"
  exec nsenter -t "$pid" -a -- env -i PATH="$PATH" HOME=/root LANG=C.UTF-8 \
    SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 "$@"
}

cmd_root() {
  local st pid; st=$(state_dir "${1:-}")
  pid=$(live_pid "$st") || die "no running bed in $st"
  echo "/proc/$pid/root"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  stop)  shift; cmd_stop "$@" ;;
  exec)  shift; cmd_exec "$@" ;;
  root)  shift; cmd_root "$@" ;;
  _init) shift; cmd_init "$@" ;;
  _init2) shift; cmd_init2 "$@" ;;
  *) usage ;;
esac
