package emulator

import (
	"context"
	"net/http"
	"strings"

	apikeysapi "cloud.google.com/go/apikeys/apiv2"
	"cloud.google.com/go/apikeys/apiv2/apikeyspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The API Keys API is reached over REST for most calls and over gRPC for
// LookupKey: the REST keys:lookupKey carries the key string in its query
// string, where proxies and access logs record it, while the gRPC request
// carries it in the body. Both are served on the one address, as
// APIKEYS_EMULATOR_HOST promises: a request with a gRPC content type over
// HTTP/2 (cleartext, prior knowledge, as gRPC clients dial) goes to the gRPC
// server, every other request to the REST handler. Only LookupKey is served
// over gRPC; the other gRPC methods answer UNIMPLEMENTED.

// apiKeysGRPC serves ApiKeys.LookupKey.
type apiKeysGRPC struct {
	apikeyspb.UnimplementedApiKeysServer
	s *Server
}

func (g *apiKeysGRPC) LookupKey(ctx context.Context, req *apikeyspb.LookupKeyRequest) (*apikeyspb.LookupKeyResponse, error) {
	// For the quota: the call is charged to the key's project.
	ctx = context.WithValue(ctx, keyStringKey{}, req.GetKeyString())
	if err := g.s.enter(ctx, "apikeys.LookupKey"); err != nil {
		return nil, g.s.apiKeysFault(err, "")
	}
	parent, name, err := g.s.lookupKeyString(req.GetKeyString())
	if err != nil {
		return nil, err
	}
	return &apikeyspb.LookupKeyResponse{Parent: parent, Name: name}, nil
}

// apiKeysMux routes a request on the API Keys address: gRPC to gs, the rest
// to rest. It counts requests whose URL carries a key string (see
// KeyStringsInURLs).
func (s *Server) apiKeysMux(gs *grpc.Server, rest http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		if r.URL.Query().Has("keyString") {
			s.mu.Lock()
			s.keyStringsInURLs++
			s.mu.Unlock()
		}
		rest.ServeHTTP(w, r)
	})
}

// KeyStringsInURLs returns how many requests to the API Keys address
// carried a key string in their URL (the REST keys:lookupKey), where a
// proxy or access log would record it. Not reset by ResetCalls.
func (s *Server) KeyStringsInURLs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyStringsInURLs
}

// APIKeysLookupClient returns Google's gRPC API Keys client connected to
// this emulator without credentials, for LookupKey. The caller closes it.
// Its own retries are off, as in keyrotate, which retries itself.
func (s *Server) APIKeysLookupClient(ctx context.Context) (*apikeysapi.Client, error) {
	c, err := apikeysapi.NewClient(ctx,
		option.WithEndpoint(s.APIKeysAddr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	)
	if err != nil {
		return nil, err
	}
	c.CallOptions = &apikeysapi.CallOptions{}
	return c, nil
}
