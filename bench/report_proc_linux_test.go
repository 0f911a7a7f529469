//go:build linux

package bench

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// fakeProc writes files under a temporary /proc: path -> content, and
// "self" -> the pid it links to.
func fakeProc(t *testing.T, self string, files map[string]string) procfs.FS {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if self != "" {
		if err := os.Symlink(self, filepath.Join(dir, "self")); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := procfs.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestProcessCPUFromProc(t *testing.T) {
	fs := fakeProc(t, "", map[string]string{
		// Fields 14 and 15 are utime and stime in ticks; the command name
		// may hold spaces and parentheses.
		"4242/stat": "4242 (turn server (x)) S 1 4242 4242 0 -1 4194560 3050 0 0 0 150 275 0 0 20 0 9 0 12345 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
		"4243/stat": "4243 (x) S 1 2",
		"4244/stat": "4244 (x) R 1 4244 4244 0 -1 0 0 0 0 0 68719476736 1 0 0 20 0 1 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
	})
	if got, err := processCPUIn(fs, 4242); err != nil || got != 425*clockTick {
		t.Errorf("pid 4242: %s, %v; want %s", got, err, 425*clockTick)
	}
	for _, pid := range []int{4243, 4244, 4245} { // truncated, implausible, missing
		if d, err := processCPUIn(fs, pid); !errors.Is(err, ErrNoProc) {
			t.Errorf("pid %d: %s, %v; want ErrNoProc", pid, d, err)
		}
	}
}

// TestProcessCPUThisProcess reads this process's CPU time from the real
// /proc: it grows with work done (spinning until it does, however loaded
// the machine), and a missing pid is an error.
func TestProcessCPUThisProcess(t *testing.T) {
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	after := before
	for x := 0; after <= before && time.Now().Before(deadline); x++ {
		for i := range 1_000_000 {
			x ^= i * x
		}
		after, err = ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
	}
	if after <= before {
		t.Errorf("CPU %s then %s after spinning for a minute", before, after)
	}
	if _, err := ProcessCPU(1 << 30); !errors.Is(err, ErrNoProc) {
		t.Errorf("missing pid: %v", err)
	}
}

func TestUDPCountersFromProc(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 9629064 242 643918 10273811 643917 3 0 0 0\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"UdpLite: 0 0 0 0 0 0 0 0 0\n"
	c, ok := udpCountersIn(fakeProc(t, "7", map[string]string{"7/net/snmp": snmp}))
	if !ok || c != (udpCounters{RcvbufErrors: 643917, SndbufErrors: 3, InErrors: 643918}) {
		t.Fatalf("udpCountersIn = %+v, %v", c, ok)
	}
	for name, bad := range map[string]string{
		"no Udp lines":     "Ip: Forwarding\nIp: 1\n",
		"counters missing": "Udp: InDatagrams NoPorts\nUdp: 1 2\n",
		"not numbers":      "Udp: InErrors RcvbufErrors SndbufErrors\nUdp: x y z\n",
	} {
		if c, ok := udpCountersIn(fakeProc(t, "7", map[string]string{"7/net/snmp": bad})); ok {
			t.Errorf("%s: read %+v", name, c)
		}
	}
	if _, ok := udpCountersIn(fakeProc(t, "", nil)); ok {
		t.Error("read counters without /proc/self")
	}
	if _, ok := readUDPCounters(); !ok {
		t.Error("cannot read this host's UDP counters")
	}
}

// TestMachineBusyFromProcUptime: busy is the CPUs (cpuN lines of
// /proc/stat) times the uptime, less the idle time of /proc/uptime; a
// malformed reading is none.
func TestMachineBusyFromProcUptime(t *testing.T) {
	stat := "cpu  100 5 50 9000 40 3 7 5 0 0\ncpu0 50 2 25 4500 20 1 4 2 0 0\ncpu1 50 3 25 4500 20 2 3 3 0 0\n" +
		"intr 0\nctxt 1\nbtime 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n"
	root := func(files map[string]string) string {
		dir := t.TempDir()
		for p, content := range files {
			if err := os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	got, ok := machineBusyIn(root(map[string]string{"stat": stat, "uptime": "100.50 180.25\n"}))
	if want := 20750 * time.Millisecond; !ok || got != want {
		t.Fatalf("machine busy = %s, %v; want %s", got, ok, want)
	}
	for name, files := range map[string]map[string]string{
		"no cpu line":    {"stat": "garbage\n", "uptime": "100 100\n"},
		"no uptime":      {"stat": stat},
		"garbage uptime": {"stat": stat, "uptime": "soon\n"},
		"idle > cpus":    {"stat": stat, "uptime": "100 250\n"},
	} {
		if _, ok := machineBusyIn(root(files)); ok {
			t.Errorf("%s: a reading", name)
		}
	}
}
