package emulator

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoopbackCalls makes a rotation's calls as the rotator makes
// them: through Google's clients over loopback connections (gRPC for
// Secret Manager and LookupKey, cleartext HTTP/2 REST for the rest of API
// Keys and for Gemini), 64 at a time. Client and emulator share this
// process, so cpu-µs/op (the process's CPU time per call) counts both; the
// client's part is the same from one emulator to the next, so a change of
// the figure is the emulator's. Unlike the per-call benchmarks, it counts
// the transports' work: HTTP/2 and gRPC framing, goroutines and their
// stacks, syscalls.
func BenchmarkLoopbackCalls(b *testing.B) {
	s, err := Start(Options{NoSecretWriteLimits: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	s.AddProject(testProject, testNumber)
	const n = 1000
	var keys, names []string
	for i := range n {
		_, ks, err := s.SeedKey(testProject, fmt.Sprintf("k-%d", i), nil)
		if err != nil {
			b.Fatal(err)
		}
		keys = append(keys, ks)
		name, err := s.SeedSecret(testProject, fmt.Sprintf("s-%d", i), map[string]string{"keyrotate.rotation": strings.Repeat("x", 400)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.SeedSecretVersion(name, []byte(ks)); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
	ctx := context.Background()
	sm, err := s.SecretManagerClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sm.Close() })
	lookup, err := s.APIKeysLookupClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { lookup.Close() })
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	b.Cleanup(tr.CloseIdleConnections)
	rest := &http.Client{Transport: tr}
	do := func(req *http.Request) error {
		resp, err := rest.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
		}
		return nil
	}
	var next atomic.Int64 // each goroutine its own secret, for its etags
	calls := []struct {
		name string
		call func(i int, etag *string) error
	}{
		{"GetSecret", func(i int, _ *string) error {
			_, err := sm.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: names[i]})
			return err
		}},
		{"AccessSecretVersion", func(i int, _ *string) error {
			_, err := sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: names[i] + "/versions/latest"})
			return err
		}},
		{"UpdateSecret", func(i int, etag *string) error {
			sec, err := sm.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
				Secret: &secretmanagerpb.Secret{
					Name:        names[i],
					Annotations: map[string]string{"keyrotate.rotation": strings.Repeat("y", 400)},
					Etag:        *etag,
				},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"annotations"}},
			})
			if err == nil {
				*etag = sec.GetEtag()
			}
			return err
		}},
		{"LookupKey", func(i int, _ *string) error {
			_, err := lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: keys[i]})
			return err
		}},
		{"GetKey", func(i int, _ *string) error {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/projects/%s/locations/global/keys/k-%d", s.APIKeysAddr, testProject, i), nil)
			return do(req)
		}},
		{"CountTokens", func(i int, _ *string) error {
			req, _ := http.NewRequest(http.MethodPost, "http://"+s.GeminiAddr+"/v1beta/models/gemini-3.5-flash-lite:countTokens",
				strings.NewReader(`{"contents":[{"parts":[{"text":"ping"}]}]}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-goog-api-key", keys[i])
			return do(req)
		}},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(32)
			b.ReportAllocs()
			cpu := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) % n
				etag := ""
				for pb.Next() {
					if err := c.call(i, &etag); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
