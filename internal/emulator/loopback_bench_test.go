package emulator

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/childtest"
)

// loopbackChildEnv, set, makes this test binary the emulator process of
// BenchmarkLoopbackCalls (TestMain).
const loopbackChildEnv = "KEYROTATE_EMULATOR_BENCH_CHILD"

// loopbackLoad is the load BenchmarkLoopbackCalls puts on the emulator:
// the latency of its answers (KEYROTATE_EMULATOR_BENCH_LATENCY, a
// duration; none unless set) and the calls in flight
// (KEYROTATE_EMULATOR_BENCH_INFLIGHT; 64 unless set). The fleet
// benchmark's load is 100ms and 1600 (gcp.InFlightPerCPU on 2 CPUs). The
// child reads them too, from the environment it inherits.
func loopbackLoad() (latency time.Duration, inFlight int, err error) {
	inFlight = 64
	if v := os.Getenv("KEYROTATE_EMULATOR_BENCH_LATENCY"); v != "" {
		if latency, err = time.ParseDuration(v); err != nil || latency < 0 {
			return 0, 0, fmt.Errorf("KEYROTATE_EMULATOR_BENCH_LATENCY=%q: want a duration such as 100ms", v)
		}
	}
	if v := os.Getenv("KEYROTATE_EMULATOR_BENCH_INFLIGHT"); v != "" {
		if inFlight, err = strconv.Atoi(v); err != nil || inFlight < 1 {
			return 0, 0, fmt.Errorf("KEYROTATE_EMULATOR_BENCH_INFLIGHT=%q: want a whole number of calls, at least 1", v)
		}
	}
	return latency, inFlight, nil
}

func TestMain(m *testing.M) {
	if os.Getenv(loopbackChildEnv) == "1" {
		if err := loopbackChild(); err != nil {
			fmt.Fprintln(os.Stderr, "emulator bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// loopbackWorld is what the child seeded, as it tells the parent.
type loopbackWorld struct {
	APIKeys, SecretManager, Gemini string
	Keys, Secrets                  []string
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopbackChild seeds 1,000 keys and secrets (each secret holding a
// rotation record and its key string), prints the world as a JSON line,
// then answers each line on stdin with its CPU time so far in
// nanoseconds, until stdin closes.
func loopbackChild() error {
	latency, inFlight, err := loopbackLoad()
	if err != nil {
		return err
	}
	s, err := Start(Options{NoSecretWriteLimits: true, Latency: latency})
	if err != nil {
		return err
	}
	s.AddProject(testProject, testNumber)
	w := loopbackWorld{APIKeys: s.APIKeysAddr, SecretManager: s.SecretManagerAddr, Gemini: s.GeminiAddr}
	// A secret for each call in flight at least: UpdateSecret's etags
	// are each goroutine's own.
	for i := range max(1000, inFlight) {
		_, ks, err := s.SeedKey(testProject, fmt.Sprintf("k-%d", i), nil)
		if err != nil {
			return err
		}
		name, err := s.SeedSecret(testProject, fmt.Sprintf("s-%d", i), map[string]string{"keyrotate.rotation": strings.Repeat("x", 400)})
		if err != nil {
			return err
		}
		if _, err := s.SeedSecretVersion(name, []byte(ks)); err != nil {
			return err
		}
		w.Keys, w.Secrets = append(w.Keys, ks), append(w.Secrets, name)
	}
	// KEYROTATE_EMULATOR_BENCH_CPUPROFILE names a file for the child's
	// CPU profile while it serves.
	stopProfile, err := childtest.ProfileCPU("KEYROTATE_EMULATOR_BENCH_CPUPROFILE")
	if err != nil {
		return err
	}
	defer stopProfile()
	if err := json.NewEncoder(os.Stdout).Encode(w); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Println(int64(processCPU()))
	}
	return nil
}

// loopbackEmulator is the running child.
type loopbackEmulator struct {
	loopbackWorld
	child *childtest.Child
}

func (e *loopbackEmulator) cpu(b *testing.B) time.Duration {
	if _, err := io.WriteString(e.child.Stdin, "cpu\n"); err != nil {
		b.Fatal(err)
	}
	line, err := e.child.Out.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(n)
}

// BenchmarkLoopbackCalls makes a rotation's calls as the rotator makes
// them, through Google's clients over loopback connections (gRPC for
// Secret Manager and LookupKey, cleartext HTTP/2 REST for the rest of API
// Keys and for Gemini), 64 at a time (or as loopbackLoad says), to an
// emulator in a child process, as the fleet benchmark runs it.
// emu-cpu-µs/op is the child's CPU time per call: the emulator's whole
// cost of a call, its transports' work (HTTP/2 and gRPC framing,
// goroutines, stacks, syscalls) included. client-cpu-µs/op is this
// process's: Google's clients and their transports, with none of
// keyrotate's own work (pacing, retries, the rotation), so that at the
// fleet's load the two together are the floor of what a fleet's call
// can cost on this machine.
func BenchmarkLoopbackCalls(b *testing.B) {
	_, inFlight, err := loopbackLoad()
	if err != nil {
		b.Fatal(err)
	}
	e := &loopbackEmulator{}
	e.child = childtest.Start(b, loopbackChildEnv+"=1", &e.loopbackWorld)
	n := len(e.Keys)
	ctx := context.Background()
	grpcOpts := func(addr string) []option.ClientOption {
		return []option.ClientOption{option.WithEndpoint(addr), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	}
	sm, err := secretmanager.NewClient(ctx, grpcOpts(e.SecretManager)...)
	if err != nil {
		b.Fatal(err)
	}
	sm.CallOptions = &secretmanager.CallOptions{}
	b.Cleanup(func() { sm.Close() })
	lookup, err := apikeysapi.NewClient(ctx, grpcOpts(e.APIKeys)...)
	if err != nil {
		b.Fatal(err)
	}
	lookup.CallOptions = &apikeysapi.CallOptions{}
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
			_, err := sm.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: e.Secrets[i]})
			return err
		}},
		{"AccessSecretVersion", func(i int, _ *string) error {
			_, err := sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: e.Secrets[i] + "/versions/latest"})
			return err
		}},
		{"UpdateSecret", func(i int, etag *string) error {
			sec, err := sm.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
				Secret: &secretmanagerpb.Secret{
					Name:        e.Secrets[i],
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
			_, err := lookup.LookupKey(ctx, &apikeyspb.LookupKeyRequest{KeyString: e.Keys[i]})
			return err
		}},
		{"GetKey", func(i int, _ *string) error {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/projects/%s/locations/global/keys/k-%d", e.APIKeys, testProject, i), nil)
			return do(req)
		}},
		{"CountTokens", func(i int, _ *string) error {
			req, _ := http.NewRequest(http.MethodPost, "http://"+e.Gemini+"/v1beta/models/gemini-3.5-flash-lite:countTokens",
				strings.NewReader(`{"contents":[{"parts":[{"text":"ping"}]}]}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-goog-api-key", e.Keys[i])
			return do(req)
		}},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			// RunParallel starts parallelism × GOMAXPROCS goroutines.
			b.SetParallelism(max(1, inFlight/runtime.GOMAXPROCS(0)))
			cpu, own := e.cpu(b), processCPU()
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
			b.ReportMetric(float64((processCPU()-own).Nanoseconds())/1e3/float64(b.N), "client-cpu-µs/op")
			b.ReportMetric(float64((e.cpu(b)-cpu).Nanoseconds())/1e3/float64(b.N), "emu-cpu-µs/op")
		})
	}
}
