#!/bin/bash
# /init of the dom0 that `xen-test` boots (Debian bookworm rootfs unpacked from the
# initramfs; no systemd, no udev). It starts the Xen daemons, then runs every test
# named in /xen-test/tests.list one after the other: create the domU with `xl`,
# check it, end it, and clean up before the next. Results go to /root/results, which
# is written as a tar to the virtio disk /dev/vda for the host; the machine then
# powers off. The host script writes /xen-test/params (shell variables) and the
# per-test configs under /xen-test/tests/.
#
# Check lines (results/checks.txt): "TEST CHECK ok|FAIL DETAIL". A test passes when
# every one of its checks is ok.
export PATH=/usr/lib/xen-4.17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
# udev would provide these; the hotplug scripts' locking (claim_lock) spins forever
# without /dev/stdin, and libxl then kills `block add` after its 10 s timeout.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /run/lock /run/xen /run/xenstored /var/log/xen/console /var/lib/xen \
    /var/run/xen-hotplug /root/results /xen-test/disks
hostname dom0
exec </dev/console >/dev/console 2>&1

# READY_RE REFUSED_RE READY_SECS SHUTDOWN_SECS DISK_MB (see the host script)
. /xen-test/params
R=/root/results
up() { cut -d' ' -f1 /proc/uptime; }
log() {
    echo "xen-test[$(up)] $*"
    echo "[$(up)] $*" >>$R/dom0-steps.log
}

# check TEST NAME RC DETAIL: records one check; RC 0 = ok
check() {
    if [ "$3" = 0 ]; then
        log "CHECK $1 $2: ok $4"
        echo "$1 $2 ok $4" >>$R/checks.txt
    else
        log "CHECK $1 $2: FAIL $4"
        echo "$1 $2 FAIL $4" >>$R/checks.txt
    fi
}

finish() {
    log "collecting logs"
    dmesg -n 1
    xl dmesg >$R/xl-dmesg.txt 2>&1
    dmesg >$R/dom0-dmesg.txt 2>&1
    xl info >$R/xl-info.txt 2>&1
    cp /var/log/xen/xen-hotplug.log $R/ 2>/dev/null
    echo done >$R/finished
    (cd /root && tar cf /root/results.tar results)
    if [ -b /dev/vda ]; then
        dd if=/root/results.tar of=/dev/vda bs=1M conv=fsync 2>/dev/null &&
            log "results written to the results disk ($(stat -c %s /root/results.tar) bytes)"
    else
        log "no results disk (/dev/vda): results only on this console"
    fi
    log "done"
    sync
    echo 1 >/proc/sys/kernel/sysrq
    echo o >/proc/sysrq-trigger
    sleep 1000
}

# ---------------------------------------------------------------- helpers on xl configs
# cfg_list KEY FILE: the elements of `KEY = [ '...', "..." ]` one a line (the last
# assignment wins, as in xl); comments are dropped first.
cfg_list() {
    sed 's/#.*//' "$2" | tr '\n' ' ' |
        grep -oE "(^|[[:space:];])$1[[:space:]]*=[[:space:]]*\[[^]]*\]" | tail -n 1 |
        sed 's/^[^[]*\[//; s/\]$//' | grep -oE "'[^']*'|\"[^\"]*\"" | sed 's/^.//; s/.$//'
}
# cfg_string KEY FILE: the value of `KEY = "..."` (last one wins), quotes removed
cfg_string() {
    sed 's/#.*//' "$2" | sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*[\"']\(.*\)[\"'][[:space:]]*;\{0,1\}[[:space:]]*$/\1/p" |
        tail -n 1
}

# backend_devs KIND DOMID: the device ids dom0 serves to DOMID (vbd or vif)
backend_devs() { xenstore-list /local/domain/0/backend/$1/$2 2>/dev/null; }
# backend_states KIND DOMID: "DEV=STATE ..." for every backend of that kind
backend_states() {
    local d out=""
    for d in $(backend_devs $1 $2); do
        out="$out $d=$(xenstore-read /local/domain/0/backend/$1/$2/$d/state 2>/dev/null)"
    done
    echo "${out# }"
}
# all_connected "DEV=STATE ..." [COUNT]: every state is 4 and there are COUNT of them
all_connected() {
    [ -n "$1" ] || return 1
    [ -z "$(echo "$1" | tr ' ' '\n' | grep -v '=4$')" ] || return 1
    [ -z "$2" ] || [ "$(echo "$1" | wc -w)" = "$2" ]
}
ready_count() { grep -cE "$READY_RE" "$1" 2>/dev/null || true; }
# wait_ready CONLOG OLDCOUNT NAME DOMID: waits until the console log holds more
# matches of READY_RE than OLDCOUNT; 0 = ready, 1 = timeout, 2 = the domain is gone
wait_ready() {
    local end=$(($(date +%s) + READY_SECS)) n
    while [ "$(date +%s)" -lt $end ]; do
        n=$(ready_count "$1")
        [ "${n:-0}" -gt "$2" ] && return 0
        [ "$(xl domid "$3" 2>/dev/null)" = "$4" ] || {
            sleep 0.5
            n=$(ready_count "$1")
            [ "${n:-0}" -gt "$2" ] && return 0
            return 2
        }
        sleep 0.5
    done
    return 1
}
# last_reason NAME: the last shutdown reason xl logged for the domain NAME
last_reason() {
    local c
    c=$(grep -o 'shut down, reason code [0-9]*' /var/log/xen/xl-$1.log 2>/dev/null | tail -n 1 | awk '{print $NF}')
    case "$c" in
    0) echo poweroff ;; 1) echo reboot ;; 2) echo suspend ;; 3) echo crash ;;
    4) echo watchdog ;; 5) echo soft_reset ;; *) echo "none logged" ;;
    esac
}
elapsed() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }'; }

# guest_addr DOMID DEV CFG: the IPv4 address the guest gives vif DEV: the first
# address in the backend's `ip` node (xl's ip=); else `ip=ADDR/PREFIX` from the
# kernel command line, else 169.254.100.2, with DEV added to the last byte (so
# that vif 1 gets .3 by default)
guest_addr() {
    local a
    a=$(xenstore-read /local/domain/0/backend/vif/$1/$2/ip 2>/dev/null | tr ' ' '\n' |
        grep -m 1 -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$')
    if [ -z "$a" ]; then
        a=$(cfg_string extra "$3" | tr ' ' '\n' | sed -n 's/^ip=\([0-9.]*\).*/\1/p' | head -n 1)
        a=${a:-169.254.100.2}
        a=$(echo "$a" | awk -F. -v d="$2" '{ printf "%s.%s.%s.%d", $1, $2, $3, ($4 + d) % 256 }')
    fi
    echo "$a"
}

# net_checks TEST DOMID CFG DIR SUFFIX: ping, port 80 and port 7 for every vif
net_checks() {
    local t=$1 domid=$2 cfg=$3 dir=$4 sfx=$5 d a rc tok got
    for d in $(backend_devs vif $domid); do
        a=$(guest_addr $domid $d "$cfg")
        ping -c 3 -i 0.3 -W 2 "$a" >"$dir/ping-vif$d$sfx.txt" 2>&1
        check $t ping-vif$d$sfx $? "dom0 -> $a: $(grep -oE '[0-9]+ received' "$dir/ping-vif$d$sfx.txt")"
        [ -n "$sfx" ] && continue
        # port 80: a plain-text status page
        timeout 20 bash -c 'exec 3<>/dev/tcp/$1/80 || exit 1
            printf "GET / HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$1" >&3
            cat <&3' _ "$a" >"$dir/http-vif$d.txt" 2>"$dir/http-vif$d.err"
        rc=$?
        got=$(head -n 1 "$dir/http-vif$d.txt" | tr -d '\r')
        echo "$got" | grep -qE '^HTTP/1\.[01] 200' &&
            [ -n "$(sed '1,/^\r\{0,1\}$/d' "$dir/http-vif$d.txt")" ]
        check $t http-vif$d $? "GET http://$a/ -> '$got', $(stat -c %s "$dir/http-vif$d.txt") bytes (rc $rc)"
        # port 7: echo, a line and then 3000 bytes in one write
        tok="xen-test echo $t vif$d $RANDOM$RANDOM"
        got=$(timeout 15 bash -c 'exec 3<>/dev/tcp/$1/7 || exit 1
            printf "%s\n" "$2" >&3
            IFS= read -r l <&3 && printf "%s\n" "$l"
            big=$(head -c 2250 /dev/urandom | base64 -w 0)
            printf "%s" "$big" >&3
            r=$(head -c ${#big} <&3)
            [ "$r" = "$big" ] && echo big-ok || echo "big-bad (${#r} of ${#big} bytes)"' _ "$a" "$tok" 2>&1)
        echo "$got" >"$dir/echo-vif$d.txt"
        [ "$(echo "$got" | head -n 1)" = "$tok" ] && [ "$(echo "$got" | sed -n 2p)" = big-ok ]
        check $t echo-vif$d $? "$a:7 echoed a line and 3000 bytes: $(echo "$got" | sed -n 2p)"
    done
}

# dump_state NAME DOMID DIR SUFFIX: xenstore, xl and bridge state for the record
dump_state() {
    xl list >"$3/xl-list$4.txt" 2>&1
    xl list -l "$1" >"$3/xl-list-l$4.json" 2>&1
    xenstore-ls -f /local/domain/0/backend >"$3/xenstore-backends$4.txt" 2>&1
    xenstore-ls -f /local/domain/$2 >"$3/xenstore-domu$4.txt" 2>&1
    ip -d link >"$3/ip-link$4.txt" 2>&1
    bridge link >"$3/bridge-link$4.txt" 2>&1
    losetup -a >"$3/losetup$4.txt" 2>&1
}

# ---------------------------------------------------------------- one test
run_test() {
    local t=$1 cfg=/xen-test/tests/$1.cfg dir=$R/$1 name domid rc c0 t0 img vdev mode
    local want_disks want_vifs st conlog reason r n newid end onr crash_re
    mkdir -p "$dir"
    cp "$cfg" "$dir/domu.cfg"
    name=$(cfg_string name "$cfg")
    conlog=/var/log/xen/console/guest-$name.log
    log "===== test $t (domain $name)"
    # fresh disk images: 'XEN-TEST-DISK' in sector 0, zero elsewhere
    rm -f /xen-test/disks/*
    for img in $(grep -v '^[[:space:]]*#' "$cfg" | grep -oE '/xen-test/disks/[A-Za-z0-9._-]+' | sort -u); do
        truncate -s ${DISK_MB}M "$img"
        printf 'XEN-TEST-DISK %s\n' "$t" | dd of="$img" conv=notrunc 2>/dev/null
        md5sum "$img" >>"$dir/images-before.md5"
    done
    want_disks=$(cfg_list disk "$cfg" | wc -l)
    want_vifs=$(cfg_list vif "$cfg" | wc -l)
    onr=$(cfg_string on_reboot "$cfg")
    onr=${onr:-restart} # xl's default
    # "# xen-test: expect-crash REGEX": the guest must crash by itself, printing REGEX
    crash_re=$(sed -n 's/^#[[:space:]]*xen-test:[[:space:]]*expect-crash[[:space:]]*//p' "$cfg" | tail -n 1)
    if grep -qE '^#[[:space:]]*xen-test:[[:space:]]*expect-crash' "$cfg"; then crash_re=${crash_re:-crash}; fi

    # created paused, so that `xl console` is attached before the guest runs
    t0=$(up)
    timeout 180 xl -vvv create -p "$cfg" >"$dir/xl-create.log" 2>&1
    rc=$?
    check $t xl-create $rc "in $(elapsed $t0)s (rc $rc; $want_disks disk(s), $want_vifs vif(s))"
    domid=$(xl domid "$name" 2>/dev/null)
    if [ $rc != 0 ] || [ -z "$domid" ]; then
        tail -n 20 "$dir/xl-create.log"
        xl destroy "$name" >/dev/null 2>&1
        end_test $t "$name" "$dir" "$domid"
        return
    fi
    mkfifo $dir/.xlc-in
    sleep 100000 >$dir/.xlc-in &
    XLC_HOLD=$!
    xl console "$name" <$dir/.xlc-in >"$dir/xl-console.txt" 2>&1 &
    XLC=$!
    for _ in $(seq 1 50); do
        [ -n "$(xenstore-read /local/domain/$domid/console/tty 2>/dev/null)" ] && break
        sleep 0.1
    done
    sleep 0.5
    c0=$(ready_count "$conlog")
    t0=$(up)
    xl unpause "$name"
    check $t xl-unpause $? "domid $domid"
    if [ -n "$crash_re" ]; then
        # a guest that must crash by itself: no ready line, reason crash
        end=$(($(date +%s) + READY_SECS))
        while [ "$(date +%s)" -lt $end ] && [ "$(xl domid "$name" 2>/dev/null)" = "$domid" ]; do sleep 0.5; done
        sleep 1
        reason=$(last_reason "$name")
        [ "$reason" = crash ]
        check $t crashed $? "the domain ended by itself $(elapsed $t0)s after unpause: reason $reason"
        grep -qE "$crash_re" "$conlog"
        check $t crash-message $? "console: $(grep -E "$crash_re" "$conlog" | tail -n 1 | tr -d '\r')"
        END_RE=$crash_re end_test $t "$name" "$dir" "$domid"
        return
    fi
    wait_ready "$conlog" "${c0:-0}" "$name" $domid
    rc=$?
    case $rc in
    0) check $t ready 0 "/$READY_RE/ on the PV console $(elapsed $t0)s after unpause" ;;
    1) check $t ready 1 "no /$READY_RE/ on the PV console within ${READY_SECS}s" ;;
    *) check $t ready 1 "the domain ended before /$READY_RE/: reason $(last_reason "$name")" ;;
    esac
    if [ $rc = 2 ]; then
        end_test $t "$name" "$dir" "$domid"
        return
    fi
    dump_state "$name" $domid "$dir" ""

    # the toolstack's view: every configured device listed, connected (state 4)
    xl block-list "$name" >"$dir/xl-block-list.txt" 2>&1
    rc=$?
    # rows: a header, then one line per device starting with its number
    n=$(awk 'NR > 1 && $1 ~ /^[0-9]+$/' "$dir/xl-block-list.txt" | wc -l)
    r=$(awk 'NR > 1 && $1 ~ /^[0-9]+$/ && $4 == 4' "$dir/xl-block-list.txt" | wc -l)
    [ $rc = 0 ] && [ "$r" = "$want_disks" ] && [ "$n" = "$want_disks" ]
    check $t xl-block-list $? "$n listed, $r in state 4, of $want_disks disk(s): $(awk 'NR > 1 {printf "%s ", $1}' "$dir/xl-block-list.txt")"
    xl network-list "$name" >"$dir/xl-network-list.txt" 2>&1
    rc=$?
    n=$(awk 'NR > 1 && $1 ~ /^[0-9]+$/' "$dir/xl-network-list.txt" | wc -l)
    r=$(awk 'NR > 1 && $1 ~ /^[0-9]+$/ && $5 == 4' "$dir/xl-network-list.txt" | wc -l)
    [ $rc = 0 ] && [ "$r" = "$want_vifs" ] && [ "$n" = "$want_vifs" ]
    check $t xl-network-list $? "$n listed, $r in state 4, of $want_vifs vif(s)"
    # the backends' view (blkback, netback)
    if [ "$want_disks" -gt 0 ]; then
        st=$(backend_states vbd $domid)
        all_connected "$st" "$want_disks"
        check $t vbd-backends-connected $? "vbd state $st"
    fi
    if [ "$want_vifs" -gt 0 ]; then
        st=$(backend_states vif $domid)
        all_connected "$st" "$want_vifs"
        check $t vif-backends-connected $? "vif state $st"
        r=""
        for d in $(backend_devs vif $domid); do
            ip -o link show master xenbr0 2>/dev/null | grep -q ": vif$domid\.$d[:@]" || r="$r vif$domid.$d"
        done
        [ -z "$r" ]
        check $t vifs-on-bridge $? "${r:+not on xenbr0:$r}${r:-every vif on xenbr0}"
    fi

    # every disk: the guest names it; its write landed (writable) or was refused (read-only)
    for vdev in $(backend_devs vbd $domid); do
        local be=/local/domain/0/backend/vbd/$domid/$vdev path devname w
        path=$(xenstore-read $be/params 2>/dev/null)
        mode=$(xenstore-read $be/mode 2>/dev/null)
        devname=$(xenstore-read $be/dev 2>/dev/null)
        echo "$vdev $devname $mode $path" >>"$dir/vbds.txt"
        grep -qw "$vdev" "$conlog"
        check $t console-names-vbd-$vdev $? "the guest's console mentions vdev $vdev ($devname)"
        [ -f "$path" ] || continue
        w=$(dd if="$path" bs=1M skip=1 count=1 2>/dev/null | head -c 22 | tr -d '\000')
        if [ "$mode" = w ]; then
            [ "$w" = XENKIT-UNIKERNEL-WROTE ]
            check $t disk-write-visible-$vdev $? "$path at 1 MiB: '$w'"
        else
            grep -qE "$REFUSED_RE" "$conlog"
            check $t ro-write-refused-$vdev $? "console /$REFUSED_RE/ for read-only $devname"
        fi
    done
    net_checks $t $domid "$cfg" "$dir" ""

    # xl reboot: with on_reboot = "restart" the guest comes back under a new domid
    if [ "$onr" = restart ]; then
        c0=$(ready_count "$conlog")
        t0=$(up)
        timeout $SHUTDOWN_SECS xl reboot -w "$name" >"$dir/xl-reboot.txt" 2>&1
        rc=$?
        check $t xl-reboot $rc "xl reboot -w: rc $rc after $(elapsed $t0)s"
        sleep 1
        reason=$(last_reason "$name")
        [ "$reason" = reboot ]
        check $t reboot-reason $? "xl-$name.log: reason $reason"
        newid=""
        end=$(($(date +%s) + 60))
        while [ "$(date +%s)" -lt $end ]; do
            r=$(xl domid "$name" 2>/dev/null) && [ "$r" != "$domid" ] && {
                newid=$r
                break
            }
            sleep 0.5
        done
        [ -n "$newid" ]
        check $t restarted $? "domid $domid -> ${newid:-none}"
        if [ -n "$newid" ]; then
            local oldid=$domid
            domid=$newid
            wait_ready "$conlog" "${c0:-0}" "$name" $domid
            rc=$?
            check $t ready-after-reboot $rc "/$READY_RE/ again $(elapsed $t0)s after xl reboot (domid $domid)"
            dump_state "$name" $domid "$dir" "-after-reboot"
            st="$(backend_states vbd $domid) $(backend_states vif $domid)"
            all_connected "$(echo $st)" "$((want_disks + want_vifs))"
            check $t backends-connected-after-reboot $? "$(echo $st)"
            r=$(xenstore-list /local/domain/0/backend/vbd/$oldid /local/domain/0/backend/vif/$oldid 2>/dev/null | tr '\n' ' ')
            [ -z "$r" ]
            check $t old-backends-gone $? "domid $oldid: ${r:-no backends left}"
            net_checks $t $domid "$cfg" "$dir" "-after-reboot"
        fi
    fi

    # xl shutdown: the guest must power off by itself
    if [ -n "$(xl domid "$name" 2>/dev/null)" ]; then
        domid=$(xl domid "$name")
        t0=$(up)
        timeout $SHUTDOWN_SECS xl shutdown -w "$name" >"$dir/xl-shutdown.txt" 2>&1
        rc=$?
        sleep 1
        reason=$(last_reason "$name")
        [ $rc = 0 ] && [ "$reason" = poweroff ]
        check $t shutdown-poweroff $? "xl shutdown -w: rc $rc after $(elapsed $t0)s, reason $reason"
    else
        check $t shutdown-poweroff 1 "the domain was gone before xl shutdown: reason $(last_reason "$name")"
    fi
    end_test $t "$name" "$dir" "$domid"
}

# end_test TEST NAME DIR DOMID: destroy leftovers, wait for the backends to go,
# check the console seen through `xl console`, keep the logs
end_test() {
    local t=$1 name=$2 dir=$3 domid=$4 r n vdev devname mode img
    # after a shutdown xl destroys the domain itself; give it a moment
    for _ in $(seq 1 20); do
        xl domid "$name" >/dev/null 2>&1 || break
        sleep 0.5
    done
    if xl domid "$name" >/dev/null 2>&1; then
        log "destroying $name"
        xl destroy "$name" >/dev/null 2>&1
    fi
    if [ -n "$domid" ]; then
        for _ in $(seq 1 40); do
            r=$(xenstore-list /local/domain/0/backend/vbd/$domid /local/domain/0/backend/vif/$domid 2>/dev/null)
            [ -z "$r" ] && break
            sleep 0.25
        done
        r=$(xenstore-list /local/domain/0/backend/vbd/$domid /local/domain/0/backend/vif/$domid 2>/dev/null | tr '\n' ' ')
        [ -z "$r" ] && [ -z "$(losetup -a | grep /xen-test/disks/)" ]
        check $t backends-released $? "${r:+backends left for domid $domid: $r}${r:-no backends or loop devices left}"
    fi
    sleep 0.5
    [ -n "$XLC" ] && kill $XLC 2>/dev/null
    [ -n "$XLC_HOLD" ] && kill $XLC_HOLD 2>/dev/null
    XLC="" XLC_HOLD=""
    rm -f $dir/.xlc-in
    if [ -f "$dir/xl-console.txt" ]; then
        # every line the guest printed up to its ready (or crash) line, as
        # xenconsoled logged it, must have come through `xl console` too
        r=${END_RE:-$READY_RE}
        tr -d '\r' <"$dir/xl-console.txt" >"$dir/.xlc"
        awk -v re="$r" '{ sub(/\r$/, ""); if ($0 != "") print } $0 ~ re { exit }' \
            "/var/log/xen/console/guest-$name.log" >"$dir/.want" 2>/dev/null
        n=$(grep -Fvxf "$dir/.xlc" "$dir/.want" | wc -l)
        grep -qE "$r" "$dir/.xlc" && [ "$n" = 0 ]
        check $t xl-console $? "$(($(wc -l <"$dir/.want") - n)) of the $(wc -l <"$dir/.want") lines up to /$r/ came through xl console"
        rm -f "$dir/.xlc" "$dir/.want"
    fi
    # an image the guest could only read must be byte for byte as before
    if [ -s "$dir/vbds.txt" ]; then
        md5sum /xen-test/disks/* >"$dir/images-after.md5" 2>/dev/null
        while read -r vdev devname mode img; do
            [ "$mode" = w ] && continue
            [ -n "$img" ] && [ "$(grep " $img\$" "$dir/images-before.md5")" = "$(grep " $img\$" "$dir/images-after.md5")" ]
            check $t ro-image-unchanged-$vdev $? "$img: md5 after the test as before ($(awk -v f="$img" '$2 == f {print $1}' "$dir/images-after.md5"))"
        done <"$dir/vbds.txt"
    fi
    cp "/var/log/xen/console/guest-$name.log" "$dir/console.log" 2>/dev/null
    cp "/var/log/xen/xl-$name.log" "$dir/xl.log" 2>/dev/null
    xl dmesg 2>/dev/null | grep -E '^\(XEN\) .*\(d[1-9]|^\(d[1-9]' >"$dir/xen-guest-lines.txt"
    if grep -q "^$t .* FAIL " $R/checks.txt; then r=FAIL; else r=PASS; fi
    echo "$t $r" >>$R/tests.txt
    log "===== test $t: $r"
}

# ---------------------------------------------------------------- dom0 set-up
log "dom0 init started (Linux $(uname -r))"
grep -q . /sys/hypervisor/type 2>/dev/null &&
    log "hypervisor: $(cat /sys/hypervisor/type) $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)$(cat /sys/hypervisor/version/extra)"
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-blkback xen-netback bridge loop virtio_pci virtio_blk; do
    modprobe $m || log "modprobe $m failed"
done
mount -t xenfs xenfs /proc/xen
grep -q control_d /proc/xen/capabilities
check setup dom0-privileged $? "/proc/xen/capabilities: $(cat /proc/xen/capabilities 2>/dev/null)"
XENSTORED_ROOTDIR=/run/xenstored xenstored --pid-file /run/xen/xenstored.pid
for _ in $(seq 1 100); do
    xenstore-read -s / >/dev/null 2>&1 && break
    sleep 0.1
done
xenstore-read -s / >/dev/null 2>&1
check setup xenstored $? ""
xen-init-dom0 >$R/xen-init-dom0.txt 2>&1
check setup xen-init-dom0 $? ""
xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
sleep 0.5
pidof xenconsoled >/dev/null
check setup xenconsoled $? ""
# the guests' bridge: link-local addresses only (QEMU has no NIC, nothing leaves)
ip link add xenbr0 type bridge && ip addr add 169.254.100.1/24 dev xenbr0 && ip link set xenbr0 up
check setup bridge $? "xenbr0 169.254.100.1/24"
xl info >$R/xl-info-start.txt 2>&1
grep -qE '^virt_caps.*hvm.*hap' $R/xl-info-start.txt
check setup xl-info $? "$(grep -E '^(xen_version|virt_caps)' $R/xl-info-start.txt | tr -s ' ' | tr '\n' ' ')"
if grep -q '^setup .* FAIL ' $R/checks.txt; then
    finish
fi
log "set-up done; tests: $(tr '\n' ' ' </xen-test/tests.list)"
for t in $(cat /xen-test/tests.list); do
    run_test "$t"
done
finish
