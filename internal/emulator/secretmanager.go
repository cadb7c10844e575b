package emulator

// Secret Manager v1 (gRPC).
//
// Fidelity notes, beyond those of the package doc:
//   - Global secrets (projects/*/secrets/*) and regional secrets
//     (projects/*/locations/*/secrets/*) are served on the one address, for
//     every location (the real API serves a location's secrets on
//     secretmanager.LOCATION.rep.googleapis.com only). A regional secret
//     lives only in its location: its names keep locations/L, the global
//     name of the same id is another secret, and ListSecrets lists one
//     location (or the global secrets). Regional secrets take no
//     replication (INVALID_ARGUMENT if one is given) and their versions
//     have no replication_status.
//   - List filters (ListSecretsRequest.filter, ListSecretVersionsRequest.filter)
//     are accepted and ignored: every secret or version is listed.
//   - Expiration (expire_time, ttl) is stored and returned but never enforced;
//     version_destroy_ttl (delayed destroy) and customer-managed encryption
//     are UNIMPLEMENTED. Topics and the rotation schedule are validated,
//     and events and due rotations published to Pub/Sub (pubsub.go).
//   - IAM methods are UNIMPLEMENTED but TestIamPermissions (access.go),
//     and no caller is denied unless a test
//     calls DenyPermission (server.go), except that an unknown project answers PERMISSION_DENIED, as the real API does for a
//     project the caller cannot see, and so does a project where
//     SetServiceEnabled disabled "secretmanager.googleapis.com".
//   - Error codes follow the real API; messages follow its shape where known
//     ("Secret Version [...] is in DISABLED state.") and are otherwise plain.

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"maps"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Limits of the real API.
const (
	maxPayloadBytes     = 64 * 1024 // SecretPayload.data: "no larger than 64KiB"
	maxAnnotationsBytes = 16 * 1024 // keys and values together, strictly less
	maxVersionAliases   = 50
	maxLabels           = 64
	maxListPageSize     = 25000
)

var (
	secretIDRe      = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,255}$`)
	locationRe      = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	annotationKeyRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$`)
	aliasRe         = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]{0,62}$`)
	labelKeyRe      = regexp.MustCompile(`^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$`)
	labelValueRe    = regexp.MustCompile(`^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$`)
	castagnoli      = crc32.MakeTable(crc32.Castagnoli)
)

// secretState is the Secret Manager part of the emulator's state, guarded
// by Server.mu.
type secretState struct {
	// secrets by canonical name, projects/{number}/secrets/{id} or
	// projects/{number}/locations/{location}/secrets/{id}
	secrets map[string]*smSecret
	// nextRotation is at or before the earliest next_rotation_time of the
	// secrets (zero: none has one): FireDueRotations looks at the secrets
	// only once it has come, and sets it anew. A write that stores a
	// secret lowers it (noteRotationLocked); one that moves or removes a
	// schedule leaves it early, which costs one look.
	nextRotation time.Time
	// rotationVisits counts the secrets FireDueRotations has looked at,
	// for tests: a look when nothing is due must not cost in proportion
	// to the secrets.
	rotationVisits int
}

type smSecret struct {
	// pb's Name is canonical. A stored pb is never changed in place: a
	// write stores a changed copy (copy on write), so that an answer may
	// hand pb itself to gRPC to encode after s.mu is released.
	pb       *secretmanagerpb.Secret
	versions []*smVersion // versions[i] is version i+1
}

type smVersion struct {
	pb   *secretmanagerpb.SecretVersion
	data []byte // nil once destroyed
}

func newSecretState() *secretState {
	return &secretState{secrets: map[string]*smSecret{}}
}

// smServer implements the gRPC service on top of a Server.
type smServer struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer
	s *Server
}

// serveSecretManager serves the Secret Manager gRPC API on addr and returns
// the address it listens on.
func (s *Server) serveSecretManager(addr string) (string, error) {
	return s.serveGRPC(addr, smResource, func(gs *grpc.Server) {
		secretmanagerpb.RegisterSecretManagerServiceServer(gs, &smServer{s: s})
	})
}

// SecretManagerClient returns Google's Secret Manager client connected to
// this emulator without credentials, with opts added (a test's
// interceptors). The caller closes it.
//
// The client's own retries and timeouts are off (empty CallOptions), as in
// keyrotate, which retries itself: a test sees every injected fault.
func (s *Server) SecretManagerClient(ctx context.Context, opts ...option.ClientOption) (*secretmanager.Client, error) {
	c, err := secretmanager.NewClient(ctx, append([]option.ClientOption{
		option.WithEndpoint(s.SecretManagerAddr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}, opts...)...)
	if err != nil {
		return nil, err
	}
	c.CallOptions = &secretmanager.CallOptions{}
	return c, nil
}

// ---- names ----

// inspect is the permission the inspection helpers pass: it skips the
// check that the API is enabled.
const inspect = ""

// smProject resolves the {p} of projects/{p} (id or number). Call with s.mu
// held.
func (s *Server) smProject(p, permission, resource string) (*project, error) {
	if pr := s.project(p); pr != nil {
		if permission != inspect && pr.disabled["secretmanager.googleapis.com"] {
			return nil, serviceDisabled("secretmanager.googleapis.com", pr)
		}
		return pr, nil
	}
	// A project that does not exist answers as one the caller may not
	// see: PERMISSION_DENIED, "(or it may not exist)", never NOT_FOUND
	// (AIP-211; the message as Secret Manager sends it, e.g.
	// googleapis/python-secret-manager#389 and
	// GoogleCloudPlatform/java-docs-samples#6571; the choice is deliberate,
	// googleapis/google-cloud-dotnet#7879).
	return nil, status.Errorf(codes.PermissionDenied,
		"Permission '%s' denied for resource '%s' (or it may not exist).", permission, resource)
}

// parseSecretName checks projects/{p}/secrets/{s} or
// projects/{p}/locations/{l}/secrets/{s} and returns p, l ("" for a global
// secret) and s.
func parseSecretName(name string) (p, loc, id string, err error) {
	if v, ok := splitName(name, "projects/*/secrets/*"); ok {
		p, id = v[0], v[1]
	} else if v, ok := splitName(name, "projects/*/locations/*/secrets/*"); ok {
		p, loc, id = v[0], v[1], v[2]
		if !locationRe.MatchString(loc) {
			return "", "", "", status.Errorf(codes.InvalidArgument, "Invalid location [%s].", loc)
		}
	} else {
		return "", "", "", status.Errorf(codes.InvalidArgument,
			"The provided Secret name [%s] does not match the expected format [projects/*/secrets/*] or [projects/*/locations/*/secrets/*].", name)
	}
	if !secretIDRe.MatchString(id) {
		return "", "", "", status.Errorf(codes.InvalidArgument,
			"Invalid secret ID [%s]: it must be 1-255 characters of letters, digits, hyphens (-) and underscores (_).", id)
	}
	return p, loc, id, nil
}

// parseParent checks projects/{p} or projects/{p}/locations/{l}, the parent
// of secrets, and returns p and l ("" for global).
func parseParent(parent string) (p, loc string, err error) {
	if v, ok := splitName(parent, "projects/*"); ok {
		return v[0], "", nil
	}
	if v, ok := splitName(parent, "projects/*/locations/*"); ok && locationRe.MatchString(v[1]) {
		return v[0], v[1], nil
	}
	return "", "", status.Errorf(codes.InvalidArgument,
		"The provided parent [%s] does not match the expected format [projects/*] or [projects/*/locations/*].", parent)
}

// parseVersionName checks {secret name}/versions/{v}.
func parseVersionName(name string) (secretName, version string, err error) {
	i := strings.LastIndex(name, "/versions/")
	if i < 0 || name[i+len("/versions/"):] == "" || strings.Contains(name[i+len("/versions/"):], "/") {
		return "", "", status.Errorf(codes.InvalidArgument,
			"The provided Secret Version name [%s] does not match the expected format [projects/*/secrets/*/versions/*] or "+
				"[projects/*/locations/*/secrets/*/versions/*].", name)
	}
	secretName = name[:i]
	if _, _, _, err := parseSecretName(secretName); err != nil {
		return "", "", err
	}
	return secretName, name[i+len("/versions/"):], nil
}

// lookupSecret finds the secret named by name (project id or number). Call
// with s.mu held.
func (s *Server) lookupSecret(name, permission string) (*smSecret, error) {
	p, loc, id, err := parseSecretName(name)
	if err != nil {
		return nil, err
	}
	pr, err := s.smProject(p, permission, name)
	if err != nil {
		return nil, err
	}
	canon := canonicalSecretName(pr, loc, id)
	sec := s.sm.secrets[canon]
	if sec == nil {
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found.", canon)
	}
	return sec, nil
}

// canonicalSecretName names a secret by project number; loc is "" for a
// global secret.
func canonicalSecretName(pr *project, loc, id string) string {
	return parentName(pr, loc) + "/secrets/" + id
}

func parentName(pr *project, loc string) string {
	n := "projects/" + strconv.FormatInt(pr.number, 10)
	if loc != "" {
		n += "/locations/" + loc
	}
	return n
}

// lookupVersion finds the version named by name: a number, "latest" (the
// newest version, whatever its state) or a version alias. Call with s.mu held.
func (s *Server) lookupVersion(name, permission string) (*smSecret, *smVersion, error) {
	secretName, vid, err := parseVersionName(name)
	if err != nil {
		return nil, nil, err
	}
	sec, err := s.lookupSecret(secretName, permission)
	if err != nil {
		if status.Code(err) == codes.NotFound && vid == "latest" {
			// The real API says so for a missing secret too.
			p, loc, id, _ := parseSecretName(secretName)
			return nil, nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.",
				canonicalSecretName(s.project(p), loc, id))
		}
		return nil, nil, err
	}
	v, err := sec.version(vid)
	return sec, v, err
}

func (sec *smSecret) version(vid string) (*smVersion, error) {
	switch {
	case vid == "latest":
		if len(sec.versions) == 0 {
			return nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", sec.pb.Name)
		}
		return sec.versions[len(sec.versions)-1], nil
	case vid[0] >= '0' && vid[0] <= '9':
		n, err := strconv.ParseInt(vid, 10, 64)
		if err != nil || n <= 0 {
			return nil, status.Errorf(codes.InvalidArgument,
				"Invalid secret version [%s]: a version is a positive number, \"latest\" or a version alias.", vid)
		}
		if n > int64(len(sec.versions)) {
			return nil, status.Errorf(codes.NotFound, "Secret Version [%s/versions/%d] not found.", sec.pb.Name, n)
		}
		return sec.versions[n-1], nil
	default:
		if !aliasRe.MatchString(vid) {
			return nil, status.Errorf(codes.InvalidArgument,
				"Invalid secret version [%s]: a version is a positive number, \"latest\" or a version alias.", vid)
		}
		n, ok := sec.pb.VersionAliases[vid]
		if !ok || n <= 0 || n > int64(len(sec.versions)) {
			return nil, status.Errorf(codes.NotFound, "Secret Version [%s/versions/%s] not found.", sec.pb.Name, vid)
		}
		return sec.versions[n-1], nil
	}
}

// ---- validation ----

func validateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return status.Errorf(codes.InvalidArgument, "Too many labels: %d; at most %d are allowed.", len(labels), maxLabels)
	}
	for k, v := range labels {
		if !labelKeyRe.MatchString(k) || len(k) > 128 {
			return status.Errorf(codes.InvalidArgument,
				"Invalid label key [%s]: keys must be 1-63 characters, start with a lowercase letter and contain only lowercase letters, digits, '_' and '-'.", k)
		}
		if !labelValueRe.MatchString(v) || len(v) > 128 {
			return status.Errorf(codes.InvalidArgument,
				"Invalid value for label [%s]: values must be 0-63 characters of lowercase letters, digits, '_' and '-'.", k)
		}
	}
	return nil
}

func validateAnnotations(ann map[string]string) error {
	total := 0
	for k, v := range ann {
		if !annotationKeyRe.MatchString(k) {
			return status.Errorf(codes.InvalidArgument,
				"Invalid annotation key [%s]: keys must be 1-63 characters, begin and end with [a-zA-Z0-9] and contain only "+
					"[a-zA-Z0-9], '-', '_' and '.' in between (no '/').", k)
		}
		if !utf8.ValidString(v) {
			return status.Errorf(codes.InvalidArgument, "Invalid value for annotation [%s]: not valid UTF-8.", k)
		}
		total += len(k) + len(v)
	}
	if total >= maxAnnotationsBytes {
		return status.Errorf(codes.InvalidArgument,
			"Annotations are too large: keys and values total %d bytes; the total must be less than 16KiB (%d bytes).", total, maxAnnotationsBytes)
	}
	return nil
}

// validateAliases checks version aliases against the secret's versions (nil
// for a secret being created).
func validateAliases(aliases map[string]int64, sec *smSecret) error {
	if len(aliases) > maxVersionAliases {
		return status.Errorf(codes.InvalidArgument,
			"Too many version aliases: %d; at most %d are allowed.", len(aliases), maxVersionAliases)
	}
	for a, n := range aliases {
		if !aliasRe.MatchString(a) || strings.EqualFold(a, "latest") || strings.EqualFold(a, "new") {
			return status.Errorf(codes.InvalidArgument,
				"Invalid version alias [%s]: an alias is 1-63 letters, digits, '-' and '_', starts with a letter and is not 'latest' or 'NEW'.", a)
		}
		var nv int64
		if sec != nil {
			nv = int64(len(sec.versions))
		}
		if n <= 0 || n > nv {
			return status.Errorf(codes.InvalidArgument,
				"Version alias [%s] refers to version [%d], which does not exist.", a, n)
		}
		if sec.versions[n-1].pb.State == secretmanagerpb.SecretVersion_DESTROYED {
			return status.Errorf(codes.InvalidArgument,
				"Version alias [%s] refers to version [%d], which is in DESTROYED state.", a, n)
		}
	}
	return nil
}

func validateReplication(r *secretmanagerpb.Replication) error {
	switch {
	case r.GetAutomatic() != nil:
		if r.GetAutomatic().GetCustomerManagedEncryption() != nil {
			return status.Error(codes.Unimplemented, "Customer-managed encryption is not supported by the emulator.")
		}
		return nil
	case r.GetUserManaged() != nil:
		reps := r.GetUserManaged().GetReplicas()
		if len(reps) == 0 {
			return status.Error(codes.InvalidArgument, "Field [replication.user_managed.replicas] is required.")
		}
		for _, rep := range reps {
			if rep.GetLocation() == "" {
				return status.Error(codes.InvalidArgument, "Field [replication.user_managed.replicas.location] is required.")
			}
			if rep.GetCustomerManagedEncryption() != nil {
				return status.Error(codes.Unimplemented, "Customer-managed encryption is not supported by the emulator.")
			}
		}
		return nil
	}
	return status.Error(codes.InvalidArgument, "Field [replication] is required.")
}

func etagMatches(sent, current string) bool {
	return sent == "" || strings.Trim(sent, `"`) == strings.Trim(current, `"`)
}

func etagMismatch(name string) error {
	return status.Errorf(codes.FailedPrecondition,
		"The etag provided in the request does not match the current etag of [%s].", name)
}

// newEtag returns a fresh quoted etag, shaped like the real ones. Call with
// s.mu held.
func (s *Server) newEtag() string {
	sum := sha256.Sum256([]byte("secretmanager-etag-" + strconv.FormatInt(s.nextSeq(), 10)))
	return `"` + hex.EncodeToString(sum[:7]) + `"`
}

func checksum(data []byte) int64 { return int64(crc32.Checksum(data, castagnoli)) }

// ---- shared operations (call with s.mu held) ----

func (s *Server) createSecretLocked(parent, secretID string, in *secretmanagerpb.Secret) (*secretmanagerpb.Secret, error) {
	p, loc, err := parseParent(parent)
	if err != nil {
		return nil, err
	}
	if secretID == "" {
		return nil, status.Error(codes.InvalidArgument, "Field [secret_id] is required.")
	}
	if !secretIDRe.MatchString(secretID) {
		return nil, status.Errorf(codes.InvalidArgument,
			"Invalid secret ID [%s]: it must be 1-255 characters of letters, digits, hyphens (-) and underscores (_).", secretID)
	}
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "Field [secret] is required.")
	}
	pr, err := s.smProject(p, "secretmanager.secrets.create", parent)
	if err != nil {
		return nil, err
	}
	if loc != "" {
		if in.GetReplication() != nil {
			return nil, status.Error(codes.InvalidArgument, "A regional secret must not set [replication]: it lives in its location.")
		}
	} else if err := validateReplication(in.GetReplication()); err != nil {
		return nil, err
	}
	if err := validateLabels(in.GetLabels()); err != nil {
		return nil, err
	}
	if err := validateAnnotations(in.GetAnnotations()); err != nil {
		return nil, err
	}
	if err := validateAliases(in.GetVersionAliases(), nil); err != nil {
		return nil, err
	}
	if in.GetVersionDestroyTtl() != nil {
		return nil, status.Error(codes.Unimplemented, "Delayed destroy (version_destroy_ttl) is not supported by the emulator.")
	}
	if in.GetCustomerManagedEncryption() != nil {
		return nil, status.Error(codes.Unimplemented, "Customer-managed encryption is not supported by the emulator.")
	}
	if err := s.validateTopics(pr, in.GetTopics(), true); err != nil {
		return nil, err
	}
	name := canonicalSecretName(pr, loc, secretID)
	if s.sm.secrets[name] != nil {
		return nil, status.Errorf(codes.AlreadyExists, "Secret [%s] already exists.", name)
	}
	pb := proto.Clone(in).(*secretmanagerpb.Secret)
	now := s.clock.Now()
	pb.Name = name
	pb.CreateTime = timestamppb.New(now)
	pb.Etag = s.newEtag()
	pb.Tags = nil // input only
	pb.PolicyMember = nil
	if err := s.validateRotation(pb, true); err != nil {
		return nil, err
	}
	if ttl := in.GetTtl(); ttl != nil {
		pb.Expiration = &secretmanagerpb.Secret_ExpireTime{ExpireTime: timestamppb.New(now.Add(ttl.AsDuration()))}
	}
	s.sm.secrets[name] = &smSecret{pb: pb}
	s.noteRotationLocked(pb)
	return proto.Clone(pb).(*secretmanagerpb.Secret), nil
}

func (s *Server) addVersionLocked(parent string, payload *secretmanagerpb.SecretPayload) (*secretmanagerpb.SecretVersion, error) {
	sec, err := s.lookupSecret(parent, "secretmanager.versions.add")
	if err != nil {
		return nil, err
	}
	if payload == nil || len(payload.GetData()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "Field [payload] is required.")
	}
	data := payload.GetData()
	if len(data) > maxPayloadBytes {
		return nil, status.Errorf(codes.InvalidArgument,
			"Secret payload data is %d bytes; it must be no larger than 64KiB (%d bytes).", len(data), maxPayloadBytes)
	}
	sum := checksum(data)
	if payload.DataCrc32C != nil && payload.GetDataCrc32C() != sum {
		return nil, status.Errorf(codes.InvalidArgument,
			"Checksum mismatch: the data_crc32c of the payload (%d) does not match the CRC32C checksum of its data; the data may have been corrupted in transit.",
			payload.GetDataCrc32C())
	}
	n := len(sec.versions) + 1
	v := &secretmanagerpb.SecretVersion{
		Name:                           fmt.Sprintf("%s/versions/%d", sec.pb.Name, n),
		CreateTime:                     timestamppb.New(s.clock.Now()),
		State:                          secretmanagerpb.SecretVersion_ENABLED,
		ReplicationStatus:              replicationStatus(sec.pb.GetReplication()),
		Etag:                           s.newEtag(),
		ClientSpecifiedPayloadChecksum: payload.DataCrc32C != nil,
	}
	sec.versions = append(sec.versions, &smVersion{pb: v, data: append([]byte(nil), data...)})
	return proto.Clone(v).(*secretmanagerpb.SecretVersion), nil
}

func replicationStatus(r *secretmanagerpb.Replication) *secretmanagerpb.ReplicationStatus {
	if r == nil { // a regional secret
		return nil
	}
	if um := r.GetUserManaged(); um != nil {
		st := &secretmanagerpb.ReplicationStatus_UserManagedStatus{}
		for _, rep := range um.GetReplicas() {
			st.Replicas = append(st.Replicas, &secretmanagerpb.ReplicationStatus_UserManagedStatus_ReplicaStatus{Location: rep.GetLocation()})
		}
		return &secretmanagerpb.ReplicationStatus{ReplicationStatus: &secretmanagerpb.ReplicationStatus_UserManaged{UserManaged: st}}
	}
	return &secretmanagerpb.ReplicationStatus{ReplicationStatus: &secretmanagerpb.ReplicationStatus_Automatic{
		Automatic: &secretmanagerpb.ReplicationStatus_AutomaticStatus{}}}
}

// ---- page tokens ----

func encodePageToken(last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(last))
}

func decodePageToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) == 0 {
		return "", status.Errorf(codes.InvalidArgument, "Invalid page token [%s].", tok)
	}
	return string(b), nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, status.Errorf(codes.InvalidArgument, "Invalid page size [%d]: it must not be negative.", n)
	case n == 0 || n > maxListPageSize:
		return maxListPageSize, nil
	}
	return int(n), nil
}

// ---- RPCs ----

func (m *smServer) CreateSecret(ctx context.Context, req *secretmanagerpb.CreateSecretRequest) (*secretmanagerpb.Secret, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.CreateSecret"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.createSecretLocked(req.GetParent(), req.GetSecretId(), req.GetSecret())
	if err == nil {
		s.notifyLocked(sec, EventSecretCreate, sec)
		s.topicsConfiguredLocked(sec)
	}
	return sec, err
}

func (m *smServer) GetSecret(ctx context.Context, req *secretmanagerpb.GetSecretRequest) (*secretmanagerpb.Secret, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.GetSecret"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookupSecret(req.GetName(), "secretmanager.secrets.get")
	if err != nil {
		return nil, err
	}
	return sec.pb, nil // never changed in place (smSecret)
}

func (m *smServer) ListSecrets(ctx context.Context, req *secretmanagerpb.ListSecretsRequest) (*secretmanagerpb.ListSecretsResponse, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.ListSecrets"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, loc, err := parseParent(req.GetParent())
	if err != nil {
		return nil, err
	}
	pr, err := s.smProject(p, "secretmanager.secrets.list", req.GetParent())
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after string
	if req.GetPageToken() != "" {
		if after, err = decodePageToken(req.GetPageToken()); err != nil {
			return nil, err
		}
	}
	prefix := parentName(pr, loc) + "/secrets/"
	var names []string
	for name := range s.sm.secrets {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	resp := &secretmanagerpb.ListSecretsResponse{TotalSize: int32(len(names))}
	for _, name := range names {
		if after != "" && name <= after {
			continue
		}
		if len(resp.Secrets) == size {
			resp.NextPageToken = encodePageToken(resp.Secrets[size-1].GetName())
			break
		}
		resp.Secrets = append(resp.Secrets, proto.Clone(s.sm.secrets[name].pb).(*secretmanagerpb.Secret))
	}
	return resp, nil
}

// updatable lists the Secret fields UpdateSecret may change; immutable
// lists those the real API refuses to change.
var (
	updatable = map[string]bool{
		"labels": true, "annotations": true, "version_aliases": true,
		"topics": true, "rotation": true, "expire_time": true, "ttl": true,
		// gcloud secrets update masks the rotation's fields one by one
		// (googlecloudsdk surface/secrets/update.py).
		"rotation.next_rotation_time": true, "rotation.rotation_period": true,
	}
	immutable = map[string]bool{
		"name": true, "replication": true, "create_time": true, "etag": true,
		"tags": true, "secret_type": true, "policy_member": true,
	}
)

func (m *smServer) UpdateSecret(ctx context.Context, req *secretmanagerpb.UpdateSecretRequest) (*secretmanagerpb.Secret, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.UpdateSecret"); err != nil {
		return nil, err
	}
	in := req.GetSecret()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "Field [secret] is required.")
	}
	paths := req.GetUpdateMask().GetPaths()
	if len(paths) == 0 {
		return nil, status.Error(codes.InvalidArgument, "Field [update_mask] is required and must name at least one field.")
	}
	for _, p := range paths {
		switch {
		case updatable[p]:
		case p == "version_destroy_ttl" || p == "customer_managed_encryption":
			return nil, status.Errorf(codes.Unimplemented, "Updating [%s] is not supported by the emulator.", p)
		case immutable[p]:
			return nil, status.Errorf(codes.InvalidArgument, "Field [%s] is immutable or output only and cannot be updated.", p)
		default:
			return nil, status.Errorf(codes.InvalidArgument, "Invalid update_mask path [%s]: no such updatable field of Secret.", p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookupSecret(in.GetName(), "secretmanager.secrets.update")
	if err != nil {
		return nil, err
	}
	if !etagMatches(in.GetEtag(), sec.pb.GetEtag()) {
		return nil, etagMismatch(sec.pb.GetName())
	}
	// The new secret owns what it takes from the request: copies, as
	// proto.Clone makes them (an empty map or list is nil).
	next := proto.Clone(sec.pb).(*secretmanagerpb.Secret)
	for _, p := range paths {
		switch p {
		case "labels":
			next.Labels = cloneMap(in.GetLabels())
		case "annotations":
			next.Annotations = cloneMap(in.GetAnnotations())
		case "version_aliases":
			next.VersionAliases = cloneMap(in.GetVersionAliases())
		case "topics":
			next.Topics = nil
			for _, t := range in.GetTopics() {
				next.Topics = append(next.Topics, cloneMessage(t))
			}
		case "rotation":
			next.Rotation = cloneMessage(in.GetRotation())
		case "rotation.next_rotation_time":
			if next.Rotation == nil {
				next.Rotation = &secretmanagerpb.Rotation{}
			}
			next.Rotation.NextRotationTime = cloneMessage(in.GetRotation().GetNextRotationTime())
		case "rotation.rotation_period":
			if next.Rotation == nil {
				next.Rotation = &secretmanagerpb.Rotation{}
			}
			next.Rotation.RotationPeriod = cloneMessage(in.GetRotation().GetRotationPeriod())
		case "expire_time":
			if t := in.GetExpireTime(); t != nil {
				next.Expiration = &secretmanagerpb.Secret_ExpireTime{ExpireTime: cloneMessage(t)}
			} else {
				next.Expiration = nil
			}
		case "ttl":
			if ttl := in.GetTtl(); ttl != nil {
				next.Expiration = &secretmanagerpb.Secret_ExpireTime{
					ExpireTime: timestamppb.New(s.clock.Now().Add(ttl.AsDuration()))}
			} else {
				next.Expiration = nil
			}
		}
	}
	if err := validateLabels(next.GetLabels()); err != nil {
		return nil, err
	}
	if err := validateAnnotations(next.GetAnnotations()); err != nil {
		return nil, err
	}
	if err := validateAliases(next.GetVersionAliases(), sec); err != nil {
		return nil, err
	}
	topicsSet, timeSet := false, false
	for _, p := range paths {
		topicsSet = topicsSet || p == "topics"
		timeSet = timeSet || p == "rotation" || p == "rotation.next_rotation_time"
	}
	p, _, _, _ := parseSecretName(sec.pb.GetName())
	if err := s.validateTopics(s.project(p), next.GetTopics(), topicsSet); err != nil {
		return nil, err
	}
	if err := s.validateRotation(next, timeSet); err != nil {
		return nil, err
	}
	next.Etag = s.newEtag()
	sec.pb = next
	s.noteRotationLocked(next)
	s.notifyLocked(next, EventSecretUpdate, next)
	if topicsSet {
		s.topicsConfiguredLocked(next)
	}
	return next, nil // never changed in place (smSecret)
}

// cloneMap copies m as proto.Clone copies a map field: empty is nil.
func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// cloneMessage is proto.Clone for a message of type M (nil: nil).
func cloneMessage[M proto.Message](m M) M {
	return proto.Clone(m).(M)
}

func (m *smServer) DeleteSecret(ctx context.Context, req *secretmanagerpb.DeleteSecretRequest) (*emptypb.Empty, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.DeleteSecret"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookupSecret(req.GetName(), "secretmanager.secrets.delete")
	if err != nil {
		return nil, err
	}
	if !etagMatches(req.GetEtag(), sec.pb.GetEtag()) {
		return nil, etagMismatch(sec.pb.GetName())
	}
	delete(s.sm.secrets, sec.pb.GetName())
	s.notifyLocked(sec.pb, EventSecretDelete, sec.pb)
	return &emptypb.Empty{}, nil
}

func (m *smServer) AddSecretVersion(ctx context.Context, req *secretmanagerpb.AddSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.AddSecretVersion"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.addVersionLocked(req.GetParent(), req.GetPayload())
	if err == nil {
		sec, _ := s.lookupSecret(req.GetParent(), inspect)
		s.notifyLocked(sec.pb, EventSecretVersionAdd, v)
	}
	return v, err
}

func (m *smServer) GetSecretVersion(ctx context.Context, req *secretmanagerpb.GetSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.GetSecretVersion"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.lookupVersion(req.GetName(), "secretmanager.versions.get")
	if err != nil {
		return nil, err
	}
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

func (m *smServer) ListSecretVersions(
	ctx context.Context, req *secretmanagerpb.ListSecretVersionsRequest,
) (*secretmanagerpb.ListSecretVersionsResponse, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.ListSecretVersions"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookupSecret(req.GetParent(), "secretmanager.versions.list")
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	before := len(sec.versions) + 1 // list versions numbered below this
	if req.GetPageToken() != "" {
		tok, err := decodePageToken(req.GetPageToken())
		if err != nil {
			return nil, err
		}
		if before, err = strconv.Atoi(tok); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "Invalid page token [%s].", req.GetPageToken())
		}
	}
	resp := &secretmanagerpb.ListSecretVersionsResponse{TotalSize: int32(len(sec.versions))}
	for n := min(before-1, len(sec.versions)); n >= 1; n-- {
		if len(resp.Versions) == size {
			resp.NextPageToken = encodePageToken(strconv.Itoa(n + 1))
			break
		}
		resp.Versions = append(resp.Versions, proto.Clone(sec.versions[n-1].pb).(*secretmanagerpb.SecretVersion))
	}
	return resp, nil
}

func (m *smServer) AccessSecretVersion(
	ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest,
) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.AccessSecretVersion"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.lookupVersion(req.GetName(), "secretmanager.versions.access")
	if err != nil {
		return nil, err
	}
	if st := v.pb.GetState(); st != secretmanagerpb.SecretVersion_ENABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in %s state.", v.pb.GetName(), st)
	}
	sum := checksum(v.data)
	return &secretmanagerpb.AccessSecretVersionResponse{
		Name:    v.pb.GetName(),
		Payload: &secretmanagerpb.SecretPayload{Data: append([]byte(nil), v.data...), DataCrc32C: &sum},
	}, nil
}

// changeVersionState is Enable, Disable and Destroy.
func (s *Server) changeVersionState(
	ctx context.Context, method, permission, name, etag string, to secretmanagerpb.SecretVersion_State,
) (*secretmanagerpb.SecretVersion, error) {
	if err := s.enter(ctx, method); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, v, err := s.lookupVersion(name, permission)
	if err != nil {
		return nil, err
	}
	if !etagMatches(etag, v.pb.GetEtag()) {
		return nil, etagMismatch(v.pb.GetName())
	}
	if v.pb.GetState() == secretmanagerpb.SecretVersion_DESTROYED {
		// Destroyed is final.
		return nil, status.Errorf(codes.FailedPrecondition, "Secret Version [%s] is in DESTROYED state.", v.pb.GetName())
	}
	v.pb.State = to
	v.pb.Etag = s.newEtag()
	if to == secretmanagerpb.SecretVersion_DESTROYED {
		v.pb.DestroyTime = timestamppb.New(s.clock.Now())
		v.data = nil
		n, _ := strconv.ParseInt(v.pb.GetName()[strings.LastIndexByte(v.pb.GetName(), '/')+1:], 10, 64)
		var next *secretmanagerpb.Secret // copy on write (smSecret)
		for a, target := range sec.pb.VersionAliases {
			if target == n {
				if next == nil {
					next = proto.Clone(sec.pb).(*secretmanagerpb.Secret)
				}
				delete(next.VersionAliases, a)
			}
		}
		if next != nil {
			next.Etag = s.newEtag()
			sec.pb = next
		}
	}
	s.notifyLocked(sec.pb, versionEvents[to], v.pb)
	return proto.Clone(v.pb).(*secretmanagerpb.SecretVersion), nil
}

// versionEvents are the notifications of a version's changes of state.
var versionEvents = map[secretmanagerpb.SecretVersion_State]string{
	secretmanagerpb.SecretVersion_ENABLED:   EventSecretVersionEnable,
	secretmanagerpb.SecretVersion_DISABLED:  EventSecretVersionDisable,
	secretmanagerpb.SecretVersion_DESTROYED: EventSecretVersionDestroy,
}

func (m *smServer) EnableSecretVersion(ctx context.Context, req *secretmanagerpb.EnableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return m.s.changeVersionState(ctx, "secretmanager.EnableSecretVersion", "secretmanager.versions.enable",
		req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_ENABLED)
}

func (m *smServer) DisableSecretVersion(ctx context.Context, req *secretmanagerpb.DisableSecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return m.s.changeVersionState(ctx, "secretmanager.DisableSecretVersion", "secretmanager.versions.disable",
		req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DISABLED)
}

func (m *smServer) DestroySecretVersion(ctx context.Context, req *secretmanagerpb.DestroySecretVersionRequest) (*secretmanagerpb.SecretVersion, error) {
	return m.s.changeVersionState(ctx, "secretmanager.DestroySecretVersion", "secretmanager.versions.destroy",
		req.GetName(), req.GetEtag(), secretmanagerpb.SecretVersion_DESTROYED)
}

// ---- seeding and inspection for tests ----

// SeedSecret creates a secret with automatic replication in a known
// project, without counting a call, and returns its name (with the project
// number).
func (s *Server) SeedSecret(projectID, secretID string, annotations map[string]string) (name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.createSecretLocked("projects/"+projectID, secretID, &secretmanagerpb.Secret{
		Replication: &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{
			Automatic: &secretmanagerpb.Replication_Automatic{}}},
		Annotations: annotations,
	})
	if err != nil {
		return "", err
	}
	return sec.GetName(), nil
}

// SeedRegionalSecret creates a regional secret in location loc of a known
// project, without counting a call, and returns its name
// (projects/NUMBER/locations/LOC/secrets/ID).
func (s *Server) SeedRegionalSecret(projectID, loc, secretID string, annotations map[string]string) (name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.createSecretLocked("projects/"+projectID+"/locations/"+loc, secretID, &secretmanagerpb.Secret{
		Annotations: annotations,
	})
	if err != nil {
		return "", err
	}
	return sec.GetName(), nil
}

// SeedSecretVersion adds an enabled version holding payload to a secret,
// without counting a call, and returns the version's name.
func (s *Server) SeedSecretVersion(secretName string, payload []byte) (versionName string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.addVersionLocked(secretName, &secretmanagerpb.SecretPayload{Data: payload})
	if err != nil {
		return "", err
	}
	return v.GetName(), nil
}

// Secret returns a copy of the named secret (project id or number).
func (s *Server) Secret(name string) (*secretmanagerpb.Secret, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookupSecret(name, inspect)
	if err != nil {
		return nil, false
	}
	return proto.Clone(sec.pb).(*secretmanagerpb.Secret), true
}

// SecretVersions returns copies of the named secret's versions, oldest
// first; nil if there is no such secret.
func (s *Server) SecretVersions(name string) []*secretmanagerpb.SecretVersion {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec, err := s.lookupSecret(name, inspect)
	if err != nil {
		return nil
	}
	out := make([]*secretmanagerpb.SecretVersion, len(sec.versions))
	for i, v := range sec.versions {
		out[i] = proto.Clone(v.pb).(*secretmanagerpb.SecretVersion)
	}
	return out
}

// SecretPayload returns a copy of the payload of a version (a number,
// "latest" or an alias), whatever its state; false if there is no such
// version or it was destroyed.
func (s *Server) SecretPayload(versionName string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, v, err := s.lookupVersion(versionName, inspect)
	if err != nil || v.data == nil {
		return nil, false
	}
	return append([]byte(nil), v.data...), true
}
