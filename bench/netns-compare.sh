#!/usr/bin/env bash
# netns-compare.sh: cl5-relay (kernel offload on, then off) against coturn,
# side by side, with clients, relay and peers in three network namespaces
# joined by veth pairs, so relayed packets really cross the node's
# interfaces (and its eBPF hooks). Root only; it removes what it creates.
#
#   bash bench/netns-compare.sh [ROUNDS]      (default 3; about 2 min a round)
#
# Each round runs, for each server in turn (cl5-tc, cl5-off, coturn):
#   paced: 5 turnutils_uclient processes x 4 sessions, 100-byte ChannelData,
#          one packet per session per millisecond (-z 1), to turnutils_peer
#          (uclient's round trip is in whole milliseconds: see light);
#   light: cl5-relay bench turn, 20 clients x 1000 pkt/s, 100 bytes, to the
#          same peer: the same rate, with round-trip percentiles;
#   burst: bench turn, 20 clients x 1500 pkt/s (60k relayed packets/s).
# and prints one line per run: the server process's CPU per relayed packet
# (utime+stime from /proc), the whole machine's busy CPU per relayed packet
# (from /proc/uptime's idle time, minus a 2 s idle baseline), the load
# generator's own CPU per relayed packet, loss, round trip, and for
# cl5-relay the share of relayed packets its offload carried (node
# metrics); at the end the medians of the rounds and their ratios to
# coturn's.
# Needs: coturn (turnserver, turnutils_uclient, turnutils_peer), iproute2,
# ethtool, curl, python3, go.
set -euo pipefail

rounds=${1:-3}
[ "$(id -u)" = 0 ] || { echo "netns-compare: run as root" >&2; exit 2; }
for b in turnserver turnutils_uclient turnutils_peer ip ethtool curl python3 go; do
	command -v "$b" >/dev/null || { echo "netns-compare: $b missing (apt-get install coturn iproute2 ethtool curl)" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/cl5-netns-compare.XXXXXX)
C=cl5cmp-c N=cl5cmp-n P=cl5cmp-p
node_ip=10.13.1.1 client_ip=10.13.1.2 peer_ip=10.13.2.2 peer_port=3480
secret=netns-compare-secret-0123456789
pids=()

cleanup() {
	for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for ns in $C $N $P; do ip netns del $ns 2>/dev/null || true; done
	[ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

(cd "$here" && go build -o "$work/cl5" ./cmd/cl5-relay)
echo "$secret" >"$work/secret"
# turnutils_uclient -W mints credentials valid for 24 h.
printf 'turn:\n  max_credential_lifetime: 25h\n' >"$work/node.yaml"

for ns in $C $N $P; do
	ip netns del $ns 2>/dev/null || true
	ip netns add $ns
	ip -n $ns link set lo up
done
ip -n $N link add vnc type veth peer name vc netns $C
ip -n $N link add vnp type veth peer name vp netns $P
ip -n $C addr add $client_ip/24 dev vc
ip -n $N addr add $node_ip/24 dev vnc
ip -n $N addr add 10.13.2.1/24 dev vnp
ip -n $P addr add $peer_ip/24 dev vp
ip -n $C link set vc up
ip -n $N link set vnc up
ip -n $N link set vnp up
ip -n $P link set vp up
ip -n $C route add default via $node_ip
ip -n $P route add default via 10.13.2.1
ip netns exec $N sh -c 'echo 1 >/proc/sys/net/ipv4/conf/all/forwarding'
# Packets from a NIC carry complete UDP checksums; veth would otherwise
# pass them on half done (CHECKSUM_PARTIAL), which the offload leaves to
# user space. Both servers get the same packets.
ip netns exec $C ethtool -K vc tx off >/dev/null
ip netns exec $P ethtool -K vp tx off >/dev/null

ip netns exec $P turnutils_peer -L $peer_ip -p $peer_port >/dev/null 2>&1 &
pids+=($!)
ip netns exec $N turnserver --no-cli --listening-ip $node_ip --listening-port 3479 --relay-ip $node_ip \
	--allow-loopback-peers --use-auth-secret --static-auth-secret "$secret" --realm cl5 \
	--no-tls --no-dtls --no-tcp-relay -n --relay-threads 2 --min-port 40000 --max-port 49999 \
	--no-stdout-log --log-file "$work/coturn.log" >/dev/null 2>&1 &
pids+=($!)
coturn_pid=$!

# proc_cpu PID: CPU ticks (utime+stime) of PID.
proc_cpu() { awk '{printf "%d\n", $14+$15}' "/proc/$1/stat"; }
# children_cpu: CPU ticks of this shell's waited-for children (the load
# generators).
children_cpu() { awk '{printf "%d\n", $16+$17}' "/proc/$1/stat"; }
# machine_busy: busy time of all CPUs since boot, in ticks (1/100 s): the
# CPUs times the uptime, less /proc/uptime's idle time. Not /proc/stat's
# ticks: sampled at the tick, they read a timer-paced load as idle.
ncpu=$(grep -c '^cpu[0-9]' /proc/stat)
machine_busy() { awk -v n="$ncpu" '{printf "%d\n", 100*(n*$1-$2)}' /proc/uptime; }
hz=$(getconf CLK_TCK)

node_pid=
start_node() { # MODE
	ip netns exec $N "$work/cl5" node --config "$work/node.yaml" --turn-listen $node_ip:3478 --turn-secret-file "$work/secret" \
		--allow-loopback-peers --relay-peer-listen "" --metrics-listen $node_ip:9491 \
		--relay-ports 50000-59999 --offload "$1" --log-level warn >"$work/node-$1.log" 2>&1 &
	node_pid=$!
	pids+=($node_pid)
	for _ in $(seq 100); do
		ip netns exec $C curl -fsS "http://$node_ip:9491/readyz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "node ($1) did not start:" >&2
	cat "$work/node-$1.log" >&2
	exit 1
}
stop_node() {
	kill "$node_pid" 2>/dev/null || true
	wait "$node_pid" 2>/dev/null || true
}
offload_now() {
	ip netns exec $C curl -fsS "http://$node_ip:9491/metrics" 2>/dev/null |
		awk '/^cl5_turn_offload_packets_total/{o+=$2} /^cl5_turn_relay_packets_total/{r+=$2} END{printf "%d %d\n", o, r}'
}

# paced NAME PORT PID [metrics]: 5 uclient processes x 4 sessions at 1 ms.
paced() {
	local name=$1 port=$2 pid=$3 msgs=3000 me=$BASHPID
	local idle0 idle1 m0 m1 c0 c1 o0 o1
	# The machine at rest (after the server's start): 2 s, per second.
	sleep 1
	idle0=$(machine_busy); sleep 2; idle1=$(machine_busy)
	[ "$name" != coturn ] && read -r o0 r0 < <(offload_now)
	c0=$(proc_cpu "$pid"); m0=$(machine_busy); g0=$(children_cpu "$me"); t0=$(date +%s.%N)
	for i in 1 2 3 4 5; do
		ip netns exec $C turnutils_uclient -c -n $msgs -m 4 -l 100 -z 1 -W "$secret" -u "p$i" \
			-e $peer_ip -r $peer_port -p "$port" $node_ip >"$work/uc$i.out" 2>&1 &
	done
	wait $(jobs -p | tail -5) 2>/dev/null || true
	c1=$(proc_cpu "$pid"); m1=$(machine_busy); g1=$(children_cpu "$me"); t1=$(date +%s.%N)
	# The node adds the kernel's counts to its relayed total every second.
	[ "$name" != coturn ] && sleep 1.2 && read -r o1 r1 < <(offload_now)
	local sent=0 recv=0 rtt=0
	for i in 1 2 3 4 5; do
		s=$(grep -o 'tot_send_msgs=[0-9]*' "$work/uc$i.out" | tail -1 | cut -d= -f2 || true)
		r=$(grep -o 'tot_recv_msgs=[0-9]*' "$work/uc$i.out" | tail -1 | cut -d= -f2 || true)
		a=$(grep -o 'Average round trip delay [0-9.]*' "$work/uc$i.out" | tail -1 | awk '{print $5}' || true)
		sent=$((sent + ${s:-0})); recv=$((recv + ${r:-0}))
		rtt=$(awk -v a="$rtt" -v b="${a:-0}" 'BEGIN{print a+b/5}')
	done
	local share=-
	[ "$name" != coturn ] && share=$(awk -v o0="$o0" -v o1="$o1" -v r0="$r0" -v r1="$r1" \
		'BEGIN{o=o1-o0; t=r1-r0; if (t>0) printf "%.1f%%", 100*o/t; else print "-"}')
	awk -v n="$name" -v c="$((c1 - c0))" -v m="$((m1 - m0))" -v i="$((idle1 - idle0))" -v hz="$hz" \
		-v t0="$t0" -v t1="$t1" -v s="$sent" -v r="$recv" -v rtt="$rtt" -v sh="$share" -v g="$((g1 - g0))" 'BEGIN{
		w=t1-t0; rel=s+r; busy=m-i/2*w; if (busy<0) busy=0
		printf "paced %-8s relayed %7d  lost %5d  server %.2f us/pkt  machine %.2f us/pkt  gen %.2f us/pkt  rtt avg %.2f ms  offload %s\n",
			n, rel, s-r, 1e6*c/hz/rel, 1e6*busy/hz/rel, 1e6*g/hz/rel, rtt, sh }'
}

# burst NAME PORT PID [RATE [LABEL]]: bench turn, 20 clients x RATE
# packets/s (default 1500: 60k relayed packets/s).
burst() {
	local name=$1 port=$2 pid=$3 rate=${4:-1500} label=${5:-burst} extra=()
	[ "$name" != coturn ] && extra=(--server-metrics "http://$node_ip:9491/metrics")
	ip netns exec $C "$work/cl5" bench turn --server $node_ip:"$port" --secret-file "$work/secret" \
		--peer $peer_ip:$peer_port --clients 20 --rate "$rate" --size 100 --duration 6s --idle-baseline 2s \
		--server-pid "$pid" "${extra[@]}" --json >"$work/burst.json" 2>"$work/burst.err" || true
	python3 - "$name" "$work/burst.json" "$label" <<'EOF'
import json, sys
name, path, label = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{label} {name:8s} failed: {e}"); sys.exit(0)
m = {x["name"]: x["value"] for x in r.get("metrics", [])}
g = lambda k: m.get(k, float("nan"))
share = f'{g("offload_share_pct"):.1f}%' if "offload_share_pct" in m else "-"
print(f'{label} {name:8s} relayed {int(g("sent_packets")+g("received_packets")):7d}  lost {int(g("lost_packets")):5d}  '
      f'server {g("server_cpu_us_per_packet"):.2f} us/pkt  machine {g("machine_cpu_us_per_packet"):.2f} us/pkt  gen {g("bench_cpu_us_per_packet"):.2f} us/pkt  '
      f'rtt p50 {g("rtt_p50_ms"):.2f} p99 {g("rtt_p99_ms"):.2f} ms  offload {share}')
EOF
}

sleep 1
for round in $(seq "$rounds"); do
	echo "# round $round"
	for srv in cl5-tc cl5-off coturn; do
		case $srv in
		coturn) paced coturn 3479 $coturn_pid; burst coturn 3479 $coturn_pid 1000 light; burst coturn 3479 $coturn_pid ;;
		cl5-tc) start_node tc; paced cl5-tc 3478 "$node_pid"; burst cl5-tc 3478 "$node_pid" 1000 light; burst cl5-tc 3478 "$node_pid"; stop_node ;;
		cl5-off) start_node off; paced cl5-off 3478 "$node_pid"; burst cl5-off 3478 "$node_pid" 1000 light; burst cl5-off 3478 "$node_pid"; stop_node ;;
		esac
	done
done | tee "$work/results"

# Medians over the rounds, and ratios to coturn's medians.
python3 - "$work/results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(paced|light|burst) (\S+)\s+relayed\s+(\d+)\s+lost\s+(-?\d+)\s+server ([\d.nan]+) us/pkt\s+machine ([\d.nan]+) us/pkt\s+gen ([\d.nan]+) us/pkt\s+rtt (?:avg ([\d.]+)|p50 ([\d.nan]+) p99 ([\d.nan]+)) ms\s+offload (\S+)", line)
    if not m:
        continue
    cond, srv = m.group(1), m.group(2)
    r = rows.setdefault((cond, srv), {"server": [], "machine": [], "gen": [], "lost": [], "relayed": [], "p99": [], "share": []})
    r["server"].append(float(m.group(5))); r["machine"].append(float(m.group(6))); r["gen"].append(float(m.group(7)))
    r["lost"].append(int(m.group(4))); r["relayed"].append(int(m.group(3)))
    if m.group(10): r["p99"].append(float(m.group(10)))
    if m.group(11).endswith("%"): r["share"].append(float(m.group(11)[:-1]))
med = lambda xs: statistics.median(xs) if xs else float("nan")
n = max((len(v["server"]) for v in rows.values()), default=0)
print(f"\n# medians of {n} rounds (server, machine, gen(erator): CPU us per relayed packet; ratio: to coturn's median)")
for cond in ("paced", "light", "burst"):
    base = rows.get((cond, "coturn"))
    for srv in ("cl5-tc", "cl5-off", "coturn"):
        r = rows.get((cond, srv))
        if not r:
            continue
        s, mach = med(r["server"]), med(r["machine"])
        ratio = s / med(base["server"]) if base else float("nan")
        mratio = mach / med(base["machine"]) if base and med(base["machine"]) > 0 else float("nan")
        print(f"{cond} {srv:8s} server {s:5.2f} ({ratio:4.2f}x)  machine {mach:5.2f} ({mratio:4.2f}x)  gen {med(r['gen']):5.2f}  "
              f"lost {sum(r['lost'])} of {sum(r['relayed'])//2}  p99 {med(r['p99']):.2f} ms  offload {med(r['share']):.1f}%")
EOF
