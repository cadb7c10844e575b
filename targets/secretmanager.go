package targets

import (
	"context"
	"errors"
	"fmt"
	"github.com/keyrotate/keyrotate/internal/errhint"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"

	"github.com/keyrotate/keyrotate/internal/gcp"
	"github.com/keyrotate/keyrotate/internal/secret"
	"github.com/keyrotate/keyrotate/rotate"
)

// SecretManager is a further Secret Manager secret that receives the key as
// a new version (with its CRC32C). It never disables a version: consumers
// reading `latest` always get the newest, enabled one.
type SecretManager struct {
	client *secretmanager.Client
	name   string // projects/P/secrets/S
}

var _ rotate.Target = (*SecretManager)(nil)

// NewSecretManager returns the target for secret name.
func NewSecretManager(c *secretmanager.Client, name string) *SecretManager {
	return &SecretManager{client: c, name: name}
}

func (s *SecretManager) String() string { return "secretmanager:" + s.name }

// Read returns the key in the newest version. A secret with no version
// reads as empty; a missing secret is an invalid target.
func (s *SecretManager) Read(ctx context.Context) (secret.Key, error) {
	v, err := gcp.AccessVersion(ctx, s.client, s.name+"/versions/latest")
	switch {
	case errors.Is(err, gcp.ErrSecretNotFound):
		if _, gerr := s.client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: s.name}); gerr != nil {
			return secret.Key{}, errhint.With(fmt.Errorf("%s: %w: %w", s, rotate.ErrInvalidTarget, err),
				"create the secret (gcloud secrets create) or fix the target's `secret:`")
		}
		return secret.Key{}, nil
	case err != nil:
		return secret.Key{}, fmt.Errorf("%s: %w", s, err)
	}
	return v.Key, nil
}

// Write adds a version holding key unless the newest already holds it.
func (s *SecretManager) Write(ctx context.Context, key secret.Key) error {
	cur, err := s.Read(ctx)
	if err != nil {
		return err
	}
	if cur.Equal(key) {
		return nil
	}
	_, err = gcp.AddVersion(ctx, s.client, s.name, key)
	return err
}
