package emulator

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// TestCloseDoesNotWaitForClients: Close returns at once even while a
// client keeps its cleartext HTTP/2 connection to a REST port open, as
// keyrotate's clients do (gcp.EmulatorTransport) until their process ends.
// A graceful http.Server.Shutdown would hold each such port for HTTP/2's
// GOAWAY timeout (a second), and every test that closes an emulator after
// an in-process run would wait for it.
func TestCloseDoesNotWaitForClients(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for _, addr := range []string{s.APIKeysAddr, s.GeminiAddr} {
		resp, err := client.Get("http://" + addr + "/v1beta/models")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s answered over %s, want HTTP/2", addr, resp.Proto)
		}
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %s with clients' HTTP/2 connections open, want it at once", d.Round(time.Millisecond))
	}
}
