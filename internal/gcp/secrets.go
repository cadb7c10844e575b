package gcp

import (
	"context"
	"fmt"
	"hash/crc32"
	"strings"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/internal/secret"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Version is one Secret Manager secret version and the key it holds.
type Version struct {
	Name string // projects/N/secrets/S/versions/V
	Key  secret.Key
}

// AccessVersion reads a secret version ("latest", a number or an alias) and
// checks its CRC32C. It is shared with the secretmanager target, and retries
// under DefaultRetry.
func AccessVersion(ctx context.Context, c *secretmanager.Client, version string) (Version, error) {
	return accessVersion(ctx, c, DefaultRetry, version)
}

func accessVersion(ctx context.Context, c *secretmanager.Client, p RetryPolicy, version string) (Version, error) {
	var resp *secretmanagerpb.AccessSecretVersionResponse
	err := p.named("secretmanager.versions.access", version).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		resp, err = c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: version})
		return err
	})
	if err != nil {
		return Version{}, fmt.Errorf("access %s: %w", version, secretErr(err, "secretmanager.versions.access", version))
	}
	data := resp.GetPayload().GetData()
	if sum := resp.GetPayload().DataCrc32C; sum != nil && int64(crc32.Checksum(data, castagnoli)) != *sum {
		return Version{}, fmt.Errorf("access %s: payload fails its CRC32C check (corrupted in transit)", version)
	}
	return Version{Name: resp.GetName(), Key: secret.New(strings.TrimRight(string(data), "\r\n"))}, nil
}

// AddVersion adds a version holding key to a secret, with its CRC32C so that
// Secret Manager rejects a payload corrupted in transit, within the
// secret's write rate (secretpace.go). It retries under
// DefaultRetry; before a retry it reads the newest version, and if the lost
// answer hid a version that landed holding key, returns that one instead of
// adding a duplicate.
func AddVersion(ctx context.Context, c *secretmanager.Client, secretName string, key secret.Key) (string, error) {
	return addVersion(ctx, c, DefaultRetry, secretName, key)
}

func addVersion(ctx context.Context, c *secretmanager.Client, p RetryPolicy, secretName string, key secret.Key) (string, error) {
	data := []byte(key.Reveal())
	sum := int64(crc32.Checksum(data, castagnoli))
	var name string
	err := p.named("secretmanager.versions.add", secretName).Do(ctx, func(ctx context.Context, a Attempt) error {
		if a.retried() {
			resp, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: secretName + "/versions/latest"})
			if transient(err) {
				return err
			}
			if err == nil && string(resp.GetPayload().GetData()) == string(data) {
				name = resp.GetName()
				return nil
			}
			// Any other answer (no version, no access permission, another
			// key): add, at worst a duplicate of a version that landed.
		}
		answered, err := waitSecretWrite(ctx, c, secretName, false)
		if err != nil {
			return err
		}
		v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
			Parent:  secretName,
			Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &sum},
		})
		answered()
		if err != nil {
			return err
		}
		name = v.GetName()
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("add version to %s: %w", secretName, secretErr(err, "secretmanager.versions.add", secretName))
	}
	return name, nil
}

// secretErr translates Secret Manager errors into the package's named
// errors. perm is the IAM permission the call needs and resource what it
// acts on, for the hint when the caller lacks it.
func secretErr(err error, perm, resource string) error {
	switch status.Code(err) {
	case codes.NotFound:
		return &apiError{err: err, kind: ErrSecretNotFound}
	case codes.PermissionDenied:
		return denied(err, perm, resource)
	}
	return err
}

// Secrets holds the Secret Manager calls the rotation protocol makes on a
// slot's secret, each retried under Retry and kept within the secret's
// write rate (see waitSecretWrite).
type Secrets struct {
	Client *secretmanager.Client
	Retry  RetryPolicy
}

// Access reads a version, as AccessVersion, under the API's policy.
func (s *Secrets) Access(ctx context.Context, version string) (Version, error) {
	return accessVersion(ctx, s.Client, s.Retry, version)
}

// Add adds a version, as AddVersion, under the API's policy.
func (s *Secrets) Add(ctx context.Context, secretName string, key secret.Key) (string, error) {
	return addVersion(ctx, s.Client, s.Retry, secretName, key)
}

func (s *Secrets) Get(ctx context.Context, name string) (*secretmanagerpb.Secret, error) {
	var sec *secretmanagerpb.Secret
	err := s.Retry.named("secretmanager.secrets.get", name).Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		sec, err = s.Client.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get secret %s: %w", name, secretErr(err, "secretmanager.secrets.get", name))
	}
	return sec, nil
}

// Update writes the fields in mask with a compare-and-swap on sec.Etag.
// Transient failures are retried; a retry whose first attempt landed fails
// with FAILED_PRECONDITION (the etag moved), which the lease handles by
// reading the secret again and checking the record is still its own.
func (s *Secrets) Update(ctx context.Context, sec *secretmanagerpb.Secret, mask ...string) (*secretmanagerpb.Secret, error) {
	var out *secretmanagerpb.Secret
	err := s.Retry.named("secretmanager.secrets.update", sec.GetName()).Do(ctx, func(ctx context.Context, _ Attempt) error {
		answered, err := waitSecretWrite(ctx, s.Client, sec.GetName(), false)
		if err != nil {
			return err
		}
		out, err = s.Client.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
			Secret:     sec,
			UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
		})
		answered()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update secret %s (%s): %w", sec.GetName(), strings.Join(mask, ","), secretErr(err, "secretmanager.secrets.update", sec.GetName()))
	}
	return out, nil
}

// Disable disables a version. Disabling an already disabled version is a
// no-op on the API, so a resumed run (or a retry) may repeat it.
func (s *Secrets) Disable(ctx context.Context, version string) error {
	err := s.Retry.named("secretmanager.versions.disable", version).Do(ctx, func(ctx context.Context, _ Attempt) error {
		answered, err := waitSecretWrite(ctx, s.Client, version, true)
		if err != nil {
			return err
		}
		_, err = s.Client.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: version})
		answered()
		return err
	})
	if err != nil {
		return fmt.Errorf("disable version %s: %w", version, secretErr(err, "secretmanager.versions.disable", version))
	}
	return nil
}

// enable enables a version; enabling an enabled version is a no-op.
func (s *Secrets) enable(ctx context.Context, version string) error {
	err := s.Retry.named("secretmanager.versions.enable", version).Do(ctx, func(ctx context.Context, _ Attempt) error {
		answered, err := waitSecretWrite(ctx, s.Client, version, true)
		if err != nil {
			return err
		}
		_, err = s.Client.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: version})
		answered()
		return err
	})
	if err != nil {
		return fmt.Errorf("enable version %s: %w", version, secretErr(err, "secretmanager.versions.enable", version))
	}
	return nil
}

// TestPermissions returns which of perms the caller holds on the secret
// name (its IAM handle's TestIamPermissions).
func (s *Secrets) TestPermissions(ctx context.Context, name string, perms []string) ([]string, error) {
	var held []string
	err := s.Retry.Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		held, err = s.Client.IAM(name).TestPermissions(ctx, perms)
		return err
	})
	return held, err
}
