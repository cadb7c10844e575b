package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/keyrotate/keyrotate/internal/errhint"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	run "cloud.google.com/go/run/apiv2"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"golang.org/x/term"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/cloudresourcemanager/v3"
	iamapi "google.golang.org/api/iam/v1"
	"google.golang.org/api/option"
	"google.golang.org/api/serviceusage/v1"
	htransport "google.golang.org/api/transport/http"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/verify"
)

// Emulator host variables, after Google's *_EMULATOR_HOST convention: when
// set, that service's client talks plain text, without credentials, to
// host:port.
const (
	apiKeysEmulatorEnv       = "APIKEYS_EMULATOR_HOST"
	secretManagerEmulatorEnv = "SECRETMANAGER_EMULATOR_HOST"
	runEmulatorEnv           = "RUN_EMULATOR_HOST"
	monitoringEmulatorEnv    = "MONITORING_EMULATOR_HOST"
)

// hosts says where each API is: "" means Google, with Application Default
// Credentials.
type hosts struct {
	apiKeys, secretManager, gemini string
	run                            string // Cloud Run Admin API v2
	monitoring                     string // Cloud Monitoring (MetricService)
}

func hostsFromEnv() hosts {
	return hosts{
		apiKeys:       os.Getenv(apiKeysEmulatorEnv),
		secretManager: os.Getenv(secretManagerEmulatorEnv),
		gemini:        os.Getenv(verify.EmulatorHostEnv),
		run:           os.Getenv(runEmulatorEnv),
		monitoring:    os.Getenv(monitoringEmulatorEnv),
	}
}

// emulated lists the emulator variables that are set, with their
// addresses.
func (h hosts) emulated() [][2]string {
	var out [][2]string
	for _, e := range [][2]string{{apiKeysEmulatorEnv, h.apiKeys}, {secretManagerEmulatorEnv, h.secretManager},
		{verify.EmulatorHostEnv, h.gemini}, {runEmulatorEnv, h.run}, {monitoringEmulatorEnv, h.monitoring}} {
		if e[1] != "" {
			out = append(out, e)
		}
	}
	return out
}

// emulatorDialTimeout bounds the check that an emulator listens: it runs on
// this machine or next to it, and answers at once when it is there.
const emulatorDialTimeout = 3 * time.Second

// check connects to every emulator address set, so that a stale variable
// (the emulator picks new ports on every start) fails at once, naming it,
// instead of leaving the run retrying a refused connection.
func (h hosts) check(ctx context.Context) error {
	for _, e := range h.emulated() {
		d := net.Dialer{Timeout: emulatorDialTimeout}
		conn, err := d.DialContext(ctx, "tcp", e[1])
		if err != nil {
			return errhint.With(fmt.Errorf("%s=%s: nothing answers there: %w", e[0], e[1], err), emulatorHint(e[0], e[1]))
		}
		_ = conn.Close()
	}
	return nil
}

// refusedEmulator reports whether err is a refused connection while an
// emulator is in use: not worth retrying, nothing starts listening by
// itself (Google's endpoints do not refuse connections).
func (h hosts) refusedEmulator(err error) bool {
	return len(h.emulated()) > 0 && connRefused(err)
}

// emulatorDownHint returns the hint for err when it is a refused connection
// to one of the emulator addresses set, else "".
func (h hosts) emulatorDownHint(err error) string {
	if !connRefused(err) {
		return ""
	}
	for _, e := range h.emulated() {
		if strings.Contains(err.Error(), e[1]) {
			return emulatorHint(e[0], e[1])
		}
	}
	return ""
}

// clients are Google's own Go clients. The API Keys API goes through the
// discovery client google.golang.org/api/apikeys/v2: the gRPC client
// cloud.google.com/go/apikeys has no service_account_email and cannot read
// or copy a key's binding. LookupKey alone goes over gRPC: the REST
// keys:lookupKey carries the key string in its URL, where proxies and
// access logs record it.
type clients struct {
	keys    *apikeys.Service
	lookup  *apikeysapi.Client    // LookupKey only
	secrets *secretmanager.Client // the global endpoint
	gemini  *verify.Gemini

	smOpts     []option.ClientOption
	smEmulated bool
	// regional holds a client per location of the regional secrets that
	// targets name, made by addLocations.
	regional map[string]*secretmanager.Client

	// run is the Cloud Run Admin API v2 (cloudrun targets); its gRPC
	// connection opens on first use. runErr says why there is none: only a
	// cloudrun target fails for it.
	run    *run.ServicesClient
	runErr error

	// access are plan's read-only checks (gcp.AccessClients).
	access *gcp.AccessClients

	// monitoring is Cloud Monitoring, for who uses each key (status,
	// plan); nil when emulators are in use without
	// MONITORING_EMULATOR_HOST, so that a test world never reaches Google.
	monitoring *monitoring.MetricClient
}

// newClients connects to the APIs. Every API Keys, Secret Manager and
// Gemini call goes through meter (nil: none), which paces it under the
// quota of the project it is charged to and counts it; at debug level
// every call is logged. quotaProject, when set, is that project for every
// API Keys, Secret Manager and Cloud Run call (x-goog-user-project). An
// emulator address that does not answer fails it at once.
func newClients(ctx context.Context, h hosts, meter *gcp.Meter, quotaProject string) (*clients, error) {
	if err := h.check(ctx); err != nil {
		return nil, err
	}
	smOpts := []option.ClientOption{noTelemetry}
	// The REST calls to an emulator share its cleartext HTTP/2
	// connections, as calls to Google share TLS ones (gcp.EmulatorTransport).
	var keysBase, geminiBase http.RoundTripper
	if h.apiKeys != "" || h.gemini != "" {
		emu := gcp.EmulatorTransport()
		if h.apiKeys != "" {
			keysBase = emu
		}
		if h.gemini != "" {
			geminiBase = emu
		}
	}
	keys, err := newKeysService(ctx, h.apiKeys, meter.Transport(gcp.APIKeys, gcp.LogCalls(gcp.APIKeys, keysBase)), quotaProject)
	if err != nil {
		return nil, err
	}
	smOpts = append(smOpts, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(
		meter.UnaryInterceptor(gcp.SecretManager), gcp.LogUnaryCalls(gcp.SecretManager))))
	smOpts = append(smOpts, quotaOptions(quotaProject, h.secretManager != "")...)
	if h.secretManager != "" {
		smOpts = append(smOpts, option.WithEndpoint(h.secretManager), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	lookup, err := newLookupClient(ctx, h.apiKeys, append(quotaOptions(quotaProject, h.apiKeys != ""), noTelemetry,
		option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(meter.UnaryInterceptor(gcp.APIKeys), gcp.LogUnaryCalls(gcp.APIKeys))))...)
	if err != nil {
		return nil, err
	}
	sm, err := newSecretManagerClient(ctx, smOpts)
	if err != nil {
		return nil, err
	}
	g := &verify.Gemini{BaseURL: verify.DefaultBaseURL,
		Client: &http.Client{Transport: meter.Transport(gcp.Gemini, gcp.LogCalls(gcp.Gemini, geminiBase))}} // no Timeout: see verify.ProbeTimeout
	if h.gemini != "" {
		g.BaseURL = "http://" + h.gemini
	}
	runOpts := append(quotaOptions(quotaProject, h.run != ""), noTelemetry, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(gcp.LogUnaryCalls("run"))))
	if h.run != "" {
		runOpts = append(runOpts, option.WithEndpoint(h.run), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	cl := &clients{keys: keys, lookup: lookup, secrets: sm, gemini: g, smOpts: smOpts, smEmulated: h.secretManager != "",
		regional: map[string]*secretmanager.Client{}}
	if cl.access, err = newAccessClients(ctx, h.apiKeys, quotaProject); err != nil {
		return nil, err
	}
	if cl.monitoring, err = newMonitoringClient(ctx, h, meter, quotaProject); err != nil {
		return nil, err
	}
	if cl.run, err = run.NewServicesClient(ctx, runOpts...); err != nil {
		cl.run, cl.runErr = nil, errhint.With(fmt.Errorf("connect to the Cloud Run API: %w", err),
			"set up Application Default Credentials, or set "+runEmulatorEnv+" to use an emulator")
	} else {
		// No retries in the client either: a failed call is reported, and
		// the rotation resumes.
		cl.run.CallOptions = &run.ServicesCallOptions{}
	}
	return cl, nil
}

// newMonitoringClient connects Cloud Monitoring's MetricClient, metered
// and logged as the others: to MONITORING_EMULATOR_HOST (plain text, no
// credentials), or to Google with Application Default Credentials and the
// quota project. With other emulators set but not this one it returns nil:
// no usage is shown rather than asking Google about emulated keys.
func newMonitoringClient(ctx context.Context, h hosts, meter *gcp.Meter, quotaProject string) (*monitoring.MetricClient, error) {
	if h.monitoring == "" && len(h.emulated()) > 0 {
		return nil, nil
	}
	opts := append(quotaOptions(quotaProject, h.monitoring != ""), noTelemetry, option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(
		meter.UnaryInterceptor(gcp.Monitoring), gcp.LogUnaryCalls(gcp.Monitoring))))
	if h.monitoring != "" {
		opts = append(opts, option.WithEndpoint(h.monitoring), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	mc, err := monitoring.NewMetricClient(ctx, opts...)
	if err != nil {
		return nil, credentialsError("Cloud Monitoring", err)
	}
	// No retries in the client: gcp.Usage retries under keyrotate's policy.
	mc.CallOptions = &monitoring.MetricCallOptions{}
	return mc, nil
}

// newKeysService connects the API Keys REST client: to the emulator at
// host (plain text, no credentials) or, with host "", to Google with
// Application Default Credentials. Every call goes through transport (the
// Meter's), under the authentication transport, so that token fetches are
// neither paced nor counted.
func newKeysService(ctx context.Context, host string, transport http.RoundTripper, quotaProject string) (*apikeys.Service, error) {
	var opts []option.ClientOption
	if host != "" {
		if quotaProject != "" {
			transport = userProjectTransport{quotaProject, transport}
		}
		opts = append(opts, option.WithEndpoint("http://"+host+"/"), option.WithHTTPClient(&http.Client{Transport: transport}))
	} else {
		t, err := htransport.NewTransport(ctx, transport, append(quotaOptions(quotaProject, false), noTelemetry, option.WithScopes(apikeys.CloudPlatformScope))...)
		if err != nil {
			return nil, credentialsError("API Keys", err)
		}
		opts = append(opts, option.WithHTTPClient(&http.Client{Transport: t}))
	}
	keys, err := apikeys.NewService(ctx, opts...)
	if err != nil {
		return nil, credentialsError("API Keys", err)
	}
	return keys, nil
}

// quotaOptions are the client options that charge every call to
// quotaProject ("": none, the credentials decide). On Google that is
// option.WithQuotaProject: the client sends x-goog-user-project with its
// credentials. An emulated client has no credentials, and Google's
// transports then send no such header (cloud.google.com/go/auth adds it
// only to authenticated connections), so for an emulator (emulated) the
// gRPC metadata is added here; REST clients of an emulator use
// userProjectTransport.
func quotaOptions(quotaProject string, emulated bool) []option.ClientOption {
	switch {
	case quotaProject == "":
		return nil
	case !emulated:
		return []option.ClientOption{option.WithQuotaProject(quotaProject)}
	}
	return []option.ClientOption{option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, userProjectHeader, quotaProject), method, req, reply, cc, opts...)
		}))}
}

// restOptions are the options of a REST client of Google (host "", with
// Application Default Credentials) or of the emulator at host, charging
// quotaProject ("": none).
func restOptions(host, quotaProject string) []option.ClientOption {
	switch {
	case host == "":
		return append(quotaOptions(quotaProject, false), noTelemetry)
	case quotaProject != "":
		return []option.ClientOption{option.WithEndpoint("http://" + host + "/"),
			option.WithHTTPClient(&http.Client{Transport: userProjectTransport{quotaProject, http.DefaultTransport}})}
	}
	return []option.ClientOption{option.WithEndpoint("http://" + host + "/"), option.WithoutAuthentication(), noTelemetry}
}

// noTelemetry turns off the OpenTelemetry instrumentation Google's clients
// add by default (a stats handler on every gRPC call, a wrapping HTTP
// transport). keyrotate installs no OpenTelemetry provider, so it records
// into no-ops, yet it costs CPU on every call and deepens the calling
// goroutine's stack: its attribute hashing alone took a rotation's stack
// past 16 KiB (to 32), the largest part of what a rotation in flight holds
// in a fleet run (rotate's TestFleetStackDepth, TestClientsRecordNoTelemetry).
var noTelemetry = option.WithTelemetryDisabled()

// userProjectHeader names the quota project of a call
// (https://cloud.google.com/apis/docs/system-parameters).
const userProjectHeader = "x-goog-user-project"

// userProjectTransport names the quota project on every request to an
// emulator (see quotaOptions).
type userProjectTransport struct {
	project string
	base    http.RoundTripper
}

func (t userProjectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(userProjectHeader, t.project)
	return t.base.RoundTrip(req)
}

// newLookupClient connects the gRPC API Keys client used for LookupKey: to
// the emulator at host (plain text, no credentials; it serves gRPC on its
// REST address) or, with host "", to apikeys.googleapis.com:443 with
// Application Default Credentials.
func newLookupClient(ctx context.Context, host string, opts ...option.ClientOption) (*apikeysapi.Client, error) {
	if host != "" {
		opts = append(opts, option.WithEndpoint(host), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	c, err := apikeysapi.NewClient(ctx, opts...)
	if err != nil {
		return nil, credentialsError("API Keys", err)
	}
	// No retries in the client: package rotate retries every call itself.
	c.CallOptions = &apikeysapi.CallOptions{}
	return c, nil
}

// newAccessClients connects the clients of plan's read-only checks:
// Resource Manager v3, Service Usage v1 and IAM v1, over REST. On Google
// each is its own host (cloudresourcemanager, serviceusage and
// iam.googleapis.com), with Application Default Credentials; with an
// emulator (host set) they go to the API Keys emulator's address, which
// serves them too, so that no further *_EMULATOR_HOST variable is needed.
func newAccessClients(ctx context.Context, host, quotaProject string) (*gcp.AccessClients, error) {
	opts := restOptions(host, quotaProject)
	crm, err := cloudresourcemanager.NewService(ctx, opts...)
	if err != nil {
		return nil, credentialsError("Resource Manager", err)
	}
	su, err := serviceusage.NewService(ctx, opts...)
	if err != nil {
		return nil, credentialsError("Service Usage", err)
	}
	ia, err := iamapi.NewService(ctx, opts...)
	if err != nil {
		return nil, credentialsError("IAM", err)
	}
	return &gcp.AccessClients{Projects: crm, Services: su, IAM: ia}, nil
}

func newSecretManagerClient(ctx context.Context, opts []option.ClientOption) (*secretmanager.Client, error) {
	sm, err := secretmanager.NewClient(ctx, opts...)
	if err != nil {
		return nil, credentialsError("Secret Manager", err)
	}
	// No retries or timeouts in the client (the defaults retry
	// AccessSecretVersion for up to 60s and hide the error behind
	// DeadlineExceeded): package rotate retries every call itself, with a
	// per-call timeout, and reports the last real error.
	sm.CallOptions = &secretmanager.CallOptions{}
	return sm, nil
}

// regionalEndpoint is where Google serves the secrets of one location
// (https://cloud.google.com/secret-manager/regional-secrets/): a regional
// secret is reachable there only, not on the global endpoint.
func regionalEndpoint(location string) string {
	return "secretmanager." + location + ".rep.googleapis.com:443"
}

// secretLocation returns the location L of a regional secret name
// projects/P/locations/L/secrets/S, or "" for a global secret.
func secretLocation(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) == 6 && parts[0] == "projects" && parts[2] == "locations" && parts[4] == "secrets" {
		return parts[3]
	}
	return ""
}

// addLocations makes a client for each location not yet known: on Google
// the location's regional endpoint; with an emulator, the emulator's one
// address, which serves every location.
func (c *clients) addLocations(ctx context.Context, locations ...string) error {
	for _, loc := range locations {
		if loc == "" || c.regional[loc] != nil {
			continue
		}
		opts := c.smOpts
		if c.smEmulated {
			// The emulator's one address serves every location.
		} else {
			opts = append(opts[:len(opts):len(opts)], option.WithEndpoint(regionalEndpoint(loc)))
		}
		sm, err := newSecretManagerClient(ctx, opts)
		if err != nil {
			return err
		}
		c.regional[loc] = sm
	}
	return nil
}

// secretsFor returns the client that serves the secret name: the global
// one, or its location's (added by addLocations first).
func (c *clients) secretsFor(name string) *secretmanager.Client {
	loc := secretLocation(name)
	if loc == "" {
		return c.secrets
	}
	sm := c.regional[loc]
	if sm == nil {
		panic("keyrotate: no Secret Manager client for location " + loc + " (addLocations not called)")
	}
	return sm
}

func (c *clients) Close() {
	if c == nil {
		return
	}
	if c.secrets != nil {
		_ = c.secrets.Close()
	}
	if c.lookup != nil {
		_ = c.lookup.Close()
	}
	for _, sm := range c.regional {
		_ = sm.Close()
	}
	if c.run != nil {
		_ = c.run.Close()
	}
	if c.monitoring != nil {
		_ = c.monitoring.Close()
	}
}

func credentialsError(api string, err error) error {
	return errhint.With(fmt.Errorf("connect to the %s API: %w", api, err),
		"set up Application Default Credentials (`gcloud auth application-default login`, or a service account in the job), or set "+
			apiKeysEmulatorEnv+"/"+secretManagerEmulatorEnv+" to use an emulator")
}

// emulatorHint is the hint for an emulator address where nothing answers:
// the emulator picks new ports on every start, so a stale export is the
// usual cause.
func emulatorHint(envVar, addr string) string {
	return fmt.Sprintf("is `keyrotate emulator` running at %s? It picks new ports on every start: "+
		"export the variables it prints again, or unset %s to use Google", addr, envVar)
}

// connRefused reports whether err is a refused connection, over REST (a
// net.OpError) or gRPC (a status whose message carries the dial error).
func connRefused(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "connection refused"))
}

func isTTY(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
