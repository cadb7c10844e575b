package rotate

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/keyrotate/keyrotate/secret"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Version is one Secret Manager secret version and the key it holds.
type Version struct {
	Name string // projects/N/secrets/S/versions/V
	Key  secret.Key
}

// AccessVersion reads a secret version ("latest", a number or an alias) and
// checks its CRC32C. It is shared with the secretmanager target.
func AccessVersion(ctx context.Context, c *secretmanager.Client, version string) (Version, error) {
	resp, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: version})
	if err != nil {
		return Version{}, fmt.Errorf("access %s: %w", version, secretErr(err))
	}
	data := resp.GetPayload().GetData()
	if sum := resp.GetPayload().DataCrc32C; sum != nil && int64(crc32.Checksum(data, castagnoli)) != *sum {
		return Version{}, fmt.Errorf("access %s: payload fails its CRC32C check (corrupted in transit)", version)
	}
	return Version{Name: resp.GetName(), Key: secret.New(strings.TrimRight(string(data), "\r\n"))}, nil
}

// AddVersion adds a version holding key to a secret, with its CRC32C so that
// Secret Manager rejects a payload corrupted in transit.
func AddVersion(ctx context.Context, c *secretmanager.Client, secretName string, key secret.Key) (string, error) {
	data := []byte(key.Reveal())
	sum := int64(crc32.Checksum(data, castagnoli))
	v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{
		Parent:  secretName,
		Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &sum},
	})
	if err != nil {
		return "", fmt.Errorf("add version to %s: %w", secretName, secretErr(err))
	}
	return v.GetName(), nil
}

// secretErr translates Secret Manager errors into the package's named errors.
func secretErr(err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return &apiError{err: err, kind: ErrSecretNotFound}
	case codes.PermissionDenied:
		return WithHint(err, permissionHint(status.Convert(err).Message(),
			"roles/secretmanager.admin (or secretAccessor + secretVersionManager + secretmanager.secrets.update)"))
	}
	return err
}

// secretsAPI holds the slot's secret operations that are not shared.
type secretsAPI struct {
	c *secretmanager.Client
}

func (s *secretsAPI) get(ctx context.Context, name string) (*secretmanagerpb.Secret, error) {
	sec, err := s.c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("get secret %s: %w", name, secretErr(err))
	}
	return sec, nil
}

// update writes the fields in mask with a compare-and-swap on sec.Etag.
func (s *secretsAPI) update(ctx context.Context, sec *secretmanagerpb.Secret, mask ...string) (*secretmanagerpb.Secret, error) {
	out, err := s.c.UpdateSecret(ctx, &secretmanagerpb.UpdateSecretRequest{
		Secret:     sec,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: mask},
	})
	if err != nil {
		return nil, fmt.Errorf("update secret %s (%s): %w", sec.GetName(), strings.Join(mask, ","), secretErr(err))
	}
	return out, nil
}

// disable disables a version. Disabling an already disabled version is a
// no-op on the API, so a resumed run may repeat it.
func (s *secretsAPI) disable(ctx context.Context, version string) error {
	if _, err := s.c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: version}); err != nil {
		return fmt.Errorf("disable version %s: %w", version, secretErr(err))
	}
	return nil
}

// versionNumber returns the last segment of a version name.
func versionNumber(name string) string {
	return name[strings.LastIndex(name, "/")+1:]
}

func isCode(err error, c codes.Code) bool {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code() == c
	}
	return false
}

// parseVersion returns the number of a version name.
func parseVersion(name string) (int64, bool) {
	if name == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(versionNumber(name), 10, 64)
	return n, err == nil
}
