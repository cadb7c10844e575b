package main

import (
	"context"
	"fmt"
	"os"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"golang.org/x/term"
	"google.golang.org/api/apikeys/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/verify"
)

// Emulator host variables, after Google's *_EMULATOR_HOST convention: when
// set, that service's client talks plain text, without credentials, to
// host:port.
const (
	apiKeysEmulatorEnv       = "APIKEYS_EMULATOR_HOST"
	secretManagerEmulatorEnv = "SECRETMANAGER_EMULATOR_HOST"
)

// hosts says where each API is: "" means Google, with Application Default
// Credentials.
type hosts struct {
	apiKeys, secretManager, gemini string
}

func hostsFromEnv() hosts {
	return hosts{
		apiKeys:       os.Getenv(apiKeysEmulatorEnv),
		secretManager: os.Getenv(secretManagerEmulatorEnv),
		gemini:        os.Getenv(verify.EmulatorHostEnv),
	}
}

// clients are Google's own Go clients. The API Keys API goes through the
// discovery client google.golang.org/api/apikeys/v2: the gRPC client
// cloud.google.com/go/apikeys has no service_account_email and cannot read
// or copy a key's binding.
type clients struct {
	keys    *apikeys.Service
	secrets *secretmanager.Client
	gemini  *verify.Gemini
}

func newClients(ctx context.Context, h hosts) (*clients, error) {
	var keyOpts, smOpts []option.ClientOption
	if h.apiKeys != "" {
		keyOpts = append(keyOpts, option.WithEndpoint("http://"+h.apiKeys+"/"), option.WithoutAuthentication())
	}
	if h.secretManager != "" {
		smOpts = append(smOpts, option.WithEndpoint(h.secretManager), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	keys, err := apikeys.NewService(ctx, keyOpts...)
	if err != nil {
		return nil, credentialsError("API Keys", err)
	}
	sm, err := secretmanager.NewClient(ctx, smOpts...)
	if err != nil {
		return nil, credentialsError("Secret Manager", err)
	}
	// No retries or timeouts in the client (the defaults retry
	// AccessSecretVersion for up to 60s and hide the error behind
	// DeadlineExceeded): package rotate retries every call itself, with a
	// per-call timeout, and reports the last real error.
	sm.CallOptions = &secretmanager.CallOptions{}
	g := &verify.Gemini{BaseURL: verify.DefaultBaseURL}
	if h.gemini != "" {
		g.BaseURL = "http://" + h.gemini
	}
	return &clients{keys: keys, secrets: sm, gemini: g}, nil
}

func (c *clients) Close() {
	if c != nil && c.secrets != nil {
		_ = c.secrets.Close()
	}
}

func credentialsError(api string, err error) error {
	return rotate.WithHint(fmt.Errorf("connect to the %s API: %w", api, err),
		"set up Application Default Credentials (`gcloud auth application-default login`, or a service account in the job), or set "+
			apiKeysEmulatorEnv+"/"+secretManagerEmulatorEnv+" to use an emulator")
}

func isTTY(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
