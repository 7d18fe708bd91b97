#!/bin/busybox sh
# The self-test guest of `xen-test --self-test`: the /init of a busybox initramfs
# for Debian's Linux, booted as a PVH domU. It does what the example unikernel
# does, as far as the runner can see, so that the runner's own checks can be
# tested on their own:
#   - every vbd: prints its vdev number, the toolstack's name, sectors and mode;
#     writes XENKIT-UNIKERNEL-WROTE at byte 1 MiB of a writable disk and reads it
#     back; on a read-only disk prints that the write was refused;
#   - every vif N: takes its address from the backend's `ip` node, else from
#     `ip=ADDR/PREFIX` on the command line plus N in the last byte, else
#     169.254.100.(2 + N)/24; answers ping,
#     serves a status page on TCP port 80 and echoes on TCP port 7; pings .1;
#   - prints `xenkit-unikernel: ready`;
#   - powers off / reboots when the toolstack asks (Linux and busybox init do that);
#   - with crash=panic on the command line: prints the crash and panics (Linux
#     then ends the domain with SCHEDOP_shutdown(crash)).
# Run as /init it starts busybox init, whose sysinit step runs "/init run".

say() { echo "xenkit-unikernel (self-test guest): $*"; }

case "$1" in
run) ;;
stop)
    exec >/dev/hvc0 2>&1
    say "stopping: Linux closes the frontends and shuts down"
    exit 0
    ;;
*)
    /bin/busybox --install -s
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    printf '::sysinit:/init run\n::ctrlaltdel:/sbin/reboot\n::shutdown:/init stop\n' >/etc/inittab
    exec /bin/busybox init
    ;;
esac

exec >/dev/hvc0 2>&1
say "Linux $(uname -r) up after $(cut -d' ' -f1 /proc/uptime)s"
if grep -qw 'crash=panic' /proc/cmdline; then
    echo "xenkit-unikernel: crash: panic: crash requested on the command line (crash=panic)"
    sleep 1
    echo 1 >/proc/sys/kernel/sysrq
    echo c >/proc/sysrq-trigger
fi
for m in $(cat /mods/order); do insmod /mods/$m || say "insmod $m failed"; done

# wait (10 s at most) until every xenbus device has its Linux device
i=0
while [ $i -lt 100 ]; do
    missing=0
    for d in /sys/bus/xen/devices/vbd-* /sys/bus/xen/devices/vif-*; do
        [ -e "$d" ] || continue
        [ -n "$(ls "$d/block" "$d/net" 2>/dev/null)" ] || missing=1
    done
    [ $missing = 0 ] && break
    sleep 0.1
    i=$((i + 1))
done

status=/www/index.html
mkdir -p /www
echo "xen-test self-test guest (Linux $(uname -r))" >$status
for d in /sys/bus/xen/devices/vbd-*; do
    [ -e "$d" ] || continue
    vdev=${d##*-}
    be=$(xenstore-read device/vbd/$vdev/backend 2>/dev/null)
    tname=$(xenstore-read "$be/dev" 2>/dev/null)
    name=$(ls "$d/block" 2>/dev/null | head -n 1)
    if [ -z "$name" ]; then
        say "vbd $vdev ($tname): no block device"
        continue
    fi
    ro=$(cat /sys/block/$name/ro)
    first=$(head -c 40 /dev/$name | tr -c 'A-Za-z0-9 .:-' '.')
    say "vbd $vdev ($tname) is /dev/$name: $(cat /sys/block/$name/size) sectors of 512, $([ "$ro" = 1 ] && echo read-only || echo writable); sector 0: '$first'"
    echo "vbd $vdev $tname /dev/$name ro=$ro" >>$status
    if printf 'XENKIT-UNIKERNEL-WROTE' | dd of=/dev/$name bs=512 seek=2048 conv=sync,fsync 2>/tmp/dd.err; then
        back=$(dd if=/dev/$name bs=512 skip=2048 count=1 2>/dev/null | head -c 22)
        say "vbd $vdev: wrote and read back '$back' at 1 MiB"
    else
        say "vbd $vdev: write refused: $(grep -v records /tmp/dd.err | tr '\n' ' ')"
    fi
done

n_vif=$(ls -d /sys/bus/xen/devices/vif-* 2>/dev/null | wc -l)
if [ "$n_vif" -gt 1 ]; then
    # several interfaces on one subnet: each answers ARP only for its own address
    echo 1 >/proc/sys/net/ipv4/conf/all/arp_ignore
    echo 2 >/proc/sys/net/ipv4/conf/all/arp_announce
fi
cmd_ip=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^ip=//p' | head -n 1)
first=1
for d in /sys/bus/xen/devices/vif-*; do
    [ -e "$d" ] || continue
    n=${d##*-}
    ifc=$(ls "$d/net" 2>/dev/null | head -n 1)
    [ -n "$ifc" ] || {
        say "vif $n: no network interface"
        continue
    }
    be=$(xenstore-read device/vif/$n/backend 2>/dev/null)
    addr=$(xenstore-read "$be/ip" 2>/dev/null | awk '{print $1}')
    from="the backend's ip node"
    [ -n "$addr" ] && addr=$addr/24
    [ -n "$addr" ] || { addr=$cmd_ip && from="the command line"; }
    [ -n "$addr" ] || { addr=169.254.100.2/24 && from="the default"; }
    case "$addr" in */*) ;; *) addr=$addr/24 ;; esac
    if [ "$from" != "the backend's ip node" ]; then
        # the Nth vif: N added to the last byte
        addr=$(echo "$addr" | awk -F'[./]' -v n="$n" '{ printf "%s.%s.%s.%d/%s", $1, $2, $3, ($4 + n) % 256, $5 }')
    fi
    ip link set "$ifc" up
    ip addr add "$addr" dev "$ifc"
    say "vif $n is $ifc, mac $(cat /sys/class/net/$ifc/address), address $addr from $from"
    echo "vif $n $ifc $addr" >>$status
    gw=$(echo "${addr%/*}" | awk -F. '{print $1 "." $2 "." $3 ".1"}')
    if [ $first = 1 ]; then
        httpd -p 80 -h /www
        nc -ll -p 7 -e /bin/cat &
        first=0
        opt=""
    else
        opt="-I $ifc"
    fi
    if ping $opt -c 2 -W 3 "$gw" >/tmp/ping 2>&1; then
        say "vif $n: ping $gw: $(grep -o '[0-9]* packets received' /tmp/ping)"
    else
        say "vif $n: ping $gw failed"
    fi
done
echo "uptime $(cut -d' ' -f1 /proc/uptime)s" >>$status
echo "xenkit-unikernel: ready"
