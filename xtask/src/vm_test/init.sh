#!/bin/sh
# /init of the kernel-matrix guest: mounts what the datapath needs, loads
# modules, runs every test binary serially and prints one result marker.
# Every line it prints itself starts with "NODEMESH-VM:"; the result marker
# carries a per-run nonce so no test output can be mistaken for it.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mkdir -p /run/netns
# Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited

. /etc/nodemesh-vm.env
rm -f /etc/nodemesh-vm.env
# The marker nonce stays in this shell; the tests never see it.
nonce=$NODEMESH_VM_NONCE
unset NODEMESH_VM_NONCE

result() {
    echo "NODEMESH-VM: RESULT $1 $nonce"
    sync
    poweroff -f
    sleep 5
    echo "NODEMESH-VM: poweroff failed"
    exit 1
}

echo "NODEMESH-VM: kernel $(uname -r)"
while read -r module; do
    [ -n "$module" ] || continue
    if ! insmod "$module"; then
        echo "NODEMESH-VM: insmod $module failed"
        result FAIL
    fi
done </etc/nodemesh-vm.modules
if ! ip link set lo up; then
    echo "NODEMESH-VM: ip link set lo up failed"
    result FAIL
fi

failed=""
ran=0
for test in /nodemesh/tests/*; do
    [ -x "$test" ] || continue
    name=${test##*/}
    echo "NODEMESH-VM: running $name"
    # shellcheck disable=SC2086 # the arguments are meant to be split
    "$test" --test-threads=1 $NODEMESH_VM_TEST_ARGS
    rc=$?
    echo "NODEMESH-VM: $name exited with $rc"
    ran=$((ran + 1))
    [ "$rc" = 0 ] || failed="$failed $name"
done

if [ "$ran" = 0 ]; then
    echo "NODEMESH-VM: no test binaries in /nodemesh/tests"
    result FAIL
fi
if [ -n "$failed" ]; then
    echo "NODEMESH-VM: failed:$failed"
    result FAIL
fi
result PASS
