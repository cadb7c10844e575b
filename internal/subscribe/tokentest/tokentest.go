// Package tokentest signs OIDC tokens like those Pub/Sub attaches to its
// pushes, with a key of the test's own, and builds an idtoken.Validator
// that trusts that key instead of Google's: the push path is tested with
// real signed tokens and the real validator, and production code has no
// switch that turns verification off or swaps the issuer.
package tokentest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"time"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"
)

// Issuer signs tokens.
type Issuer struct {
	key *rsa.PrivateKey
	kid string
}

// New returns an issuer with a fresh 2048-bit RSA key named kid.
func New(kid string) (*Issuer, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &Issuer{key: k, kid: kid}, nil
}

// Claims of a token; Sign fills iat.
type Claims struct {
	Issuer        string `json:"iss"`
	Audience      string `json:"aud"`
	Expires       int64  `json:"exp"`
	IssuedAt      int64  `json:"iat"`
	Subject       string `json:"sub,omitempty"`
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified"`
}

// Good returns the claims of a valid push token for audience and email,
// as Google issues them, expiring in an hour.
func Good(audience, email string) Claims {
	return Claims{Issuer: "https://accounts.google.com", Audience: audience, Expires: time.Now().Add(time.Hour).Unix(),
		Subject: "1234567890", Email: email, EmailVerified: true}
}

// Sign returns the token of c, signed RS256 with the issuer's key.
func (is *Issuer) Sign(c Claims) string {
	c.IssuedAt = time.Now().Unix()
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": is.kid})
	p, _ := json.Marshal(c)
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, is.key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return signed + "." + enc.EncodeToString(sig)
}

// Validator returns an idtoken.Validator whose HTTP client answers every
// request for signing keys with this issuer's public key.
func (is *Issuer) Validator(ctx context.Context) (*idtoken.Validator, error) {
	enc := base64.RawURLEncoding
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kid": is.kid, "kty": "RSA", "alg": "RS256", "use": "sig",
		"n": enc.EncodeToString(is.key.N.Bytes()),
		"e": enc.EncodeToString(big.NewInt(int64(is.key.E)).Bytes()),
	}}})
	client := &http.Client{Transport: certs(jwks)}
	return idtoken.NewValidator(ctx, option.WithHTTPClient(client))
}

// certs answers any request with the key set.
type certs []byte

func (c certs) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(c)), Request: r}, nil
}
