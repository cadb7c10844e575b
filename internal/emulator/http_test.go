package emulator

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
)

// readSyscalls is how many read system calls this process has made
// (/proc/self/io's syscr).
func readSyscalls(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no read syscall count here: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Skip("no syscr in /proc/self/io")
	return 0
}

// TestRESTReadsBuffered: the REST ports read a connection through a
// buffer (bufferedListener), not a system call for each HTTP/2 frame's
// header and another for its payload. Probes one after another over one
// cleartext HTTP/2 connection (a HEADERS and a DATA frame each), the
// client's reads and the server's counted together (both in this process;
// the client's are buffered), take about 4.2 reads a call (a read that
// finds nothing yet counts too); unbuffered they took about 7.3.
func TestRESTReadsBuffered(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func() {
		// A probe's shape: HEADERS and a DATA frame (refused: no key).
		resp, err := client.Post("http://"+s.GeminiAddr+"/v1beta/models/gemini-3.5-flash-lite:countTokens",
			"application/json", strings.NewReader(`{"contents":[{"parts":[{"text":"ping"}]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
		}
	}
	get() // the connection up
	const calls = 200
	before := readSyscalls(t)
	for range calls {
		get()
	}
	perCall := float64(readSyscalls(t)-before) / calls
	if perCall > 5.5 {
		t.Errorf("%.1f read system calls a call, want at most 5.5", perCall)
	}
	t.Logf("%.2f read system calls a call", perCall)
}
