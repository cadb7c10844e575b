package emulator

// The read-only calls with which the plan command proves that a rotation can
// succeed: Resource Manager v3 projects.testIamPermissions, Service Usage
// v1 services.batchGet, IAM v1 projects.serviceAccounts.get and
// projects.serviceAccounts.testIamPermissions (REST), and Secret Manager's
// TestIamPermissions (gRPC, in this file too).
//
// In production each REST API is its own host (cloudresourcemanager,
// serviceusage and iam.googleapis.com); the emulator serves them on the API
// Keys address, whose paths do not overlap (/v3/projects/…:testIamPermissions,
// /v1/projects/…/services…, /v1/projects/…/serviceAccounts/…; API Keys is
// /v2/…), so that no further *_EMULATOR_HOST variable is needed.
//
// They answer from the emulator's state: the permissions DenyPermission took
// away, the services SetServiceEnabled disabled, and the service accounts
// AddServiceAccount (or SeedKey, for a key's binding) made known. Shapes
// follow the public references:
//   - https://cloud.google.com/resource-manager/reference/rest/v3/projects/testIamPermissions
//     (TestIamPermissionsResponse: the subset of the permissions the caller
//     holds; the call itself needs no permission);
//   - https://cloud.google.com/service-usage/docs/reference/rest/v1/services/batchGet
//     (at most 30 names; each Service with name projects/NUMBER/services/S,
//     parent projects/NUMBER and state ENABLED or DISABLED; needs
//     serviceusage.services.get);
//   - https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/get
//     (projects/-/serviceAccounts/EMAIL; NOT_FOUND "Unknown service account"
//     for an account that does not exist; needs iam.serviceAccounts.get) and
//     …/testIamPermissions;
//   - Secret Manager's TestIamPermissions: "If the secret does not exist,
//     this call returns an empty set of permissions, not a NOT_FOUND error"
//     (the method's comment in cloud.google.com/go/secretmanager/apiv1).
//
// Strictest plausible readings, where no public source settles it: an
// unknown project answers Resource Manager's testIamPermissions and Service
// Usage with PERMISSION_DENIED (as other APIs answer a project the caller
// cannot see), and the IAM denial is the caller's alone, not per resource
// (as DenyPermission models it everywhere).

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
)

// maxBatchGetServices is services.batchGet's limit on names per request.
const maxBatchGetServices = 30

// AddServiceAccount makes a service account (by email) exist, for IAM's
// serviceAccounts.get and testIamPermissions.
func (s *Server) AddServiceAccount(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addServiceAccountLocked(email)
}

// addServiceAccountLocked makes email exist. Call with s.mu held.
func (s *Server) addServiceAccountLocked(email string) {
	if s.serviceAccounts[email] == "" {
		// A unique id has 21 digits.
		s.serviceAccounts[email] = fmt.Sprintf("1%020d", s.nextSeq())
	}
}

// DeleteServiceAccount makes a service account unknown again.
func (s *Server) DeleteServiceAccount(email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.serviceAccounts, email)
}

// AccessClientOptions returns the options that point Google's Resource
// Manager, Service Usage and IAM REST clients (google.golang.org/api) at
// this emulator, without credentials.
func (s *Server) AccessClientOptions() []option.ClientOption {
	return []option.ClientOption{option.WithEndpoint("http://" + s.APIKeysAddr + "/"), option.WithoutAuthentication()}
}

// accessRoute says which read-only method a request on the API Keys address
// is for, and its resource.
func accessRoute(r *http.Request) (method, resource string, ok bool) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	switch {
	case strings.HasPrefix(p, "v3/projects/") && strings.HasSuffix(p, ":testIamPermissions") && r.Method == http.MethodPost:
		res := strings.TrimSuffix(strings.TrimPrefix(p, "v3/"), ":testIamPermissions")
		if _, ok := splitName(res, "projects/*"); ok {
			return "resourcemanager.TestIamPermissions", res, true
		}
	case strings.HasPrefix(p, "v1/projects/") && strings.HasSuffix(p, "/services:batchGet") && r.Method == http.MethodGet:
		res := strings.TrimSuffix(strings.TrimPrefix(p, "v1/"), "/services:batchGet")
		if _, ok := splitName(res, "projects/*"); ok {
			return "serviceusage.BatchGetServices", res, true
		}
	case strings.HasPrefix(p, "v1/projects/") && strings.Contains(p, "/serviceAccounts/"):
		res := strings.TrimPrefix(p, "v1/")
		if name, ok := strings.CutSuffix(res, ":testIamPermissions"); ok && r.Method == http.MethodPost {
			if _, ok := splitName(name, "projects/*/serviceAccounts/*"); ok {
				return "iam.TestIamPermissions", name, true
			}
		} else if _, ok := splitName(res, "projects/*/serviceAccounts/*"); ok && r.Method == http.MethodGet {
			return "iam.GetServiceAccount", res, true
		}
	}
	return "", "", false
}

// withAccessAPIs serves the read-only Resource Manager, Service Usage and
// IAM calls on the API Keys address, and hands every other request to next.
func (s *Server) withAccessAPIs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method, resource, ok := accessRoute(r)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		ctx := context.WithValue(r.Context(), resourceKey{}, resource)
		if err := s.enter(ctx, method); err != nil {
			writeError(w, err)
			return
		}
		var (
			v   any
			err error
		)
		switch method {
		case "resourcemanager.TestIamPermissions":
			v, err = s.testProjectPermissions(r, resource)
		case "serviceusage.BatchGetServices":
			v, err = s.batchGetServices(r, resource)
		case "iam.GetServiceAccount":
			v, err = s.getServiceAccount(resource)
		case "iam.TestIamPermissions":
			v, err = s.testServiceAccountPermissions(r, resource)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

type permissionsWire struct {
	Permissions []string `json:"permissions,omitempty"`
}

// heldLocked returns the permissions of want the caller holds: all but
// those DenyPermission took away. Call with s.mu held.
func (s *Server) heldLocked(want []string) []string {
	var out []string
	for _, p := range want {
		if !s.denied[p] {
			out = append(out, p)
		}
	}
	return out
}

func (s *Server) testProjectPermissions(r *http.Request, resource string) (any, error) {
	var in permissionsWire
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.project(strings.TrimPrefix(resource, "projects/")) == nil {
		return nil, newError(codes.PermissionDenied, "The caller does not have permission")
	}
	return permissionsWire{Permissions: s.heldLocked(in.Permissions)}, nil
}

type serviceWire struct {
	Name   string `json:"name"`
	Parent string `json:"parent"`
	State  string `json:"state"`
}

func (s *Server) batchGetServices(r *http.Request, parent string) (any, error) {
	names := r.URL.Query()["names"]
	if len(names) == 0 || len(names) > maxBatchGetServices {
		return nil, newError(codes.InvalidArgument, "names must list 1 to %d services, got %d.", maxBatchGetServices, len(names))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.project(strings.TrimPrefix(parent, "projects/"))
	if p == nil {
		return nil, newError(codes.PermissionDenied, "Permission denied to get service [%s]", names[0]).
			withInfo("AUTH_PERMISSION_DENIED", "serviceusage.googleapis.com", map[string]string{"permission": "serviceusage.services.get"})
	}
	num := "projects/" + strconv.FormatInt(p.number, 10)
	out := struct {
		Services []serviceWire `json:"services"`
	}{}
	for _, n := range names {
		v, ok := splitName(n, "projects/*/services/*")
		if !ok || s.project(v[0]) != p {
			return nil, newError(codes.InvalidArgument, "Service name %q is not in the parent %q.", n, parent)
		}
		state := "ENABLED"
		if p.disabled[v[1]] {
			state = "DISABLED"
		}
		out.Services = append(out.Services, serviceWire{Name: num + "/services/" + v[1], Parent: num, State: state})
	}
	return out, nil
}

type serviceAccountWire struct {
	Name      string `json:"name"`
	ProjectID string `json:"projectId"`
	UniqueID  string `json:"uniqueId"`
	Email     string `json:"email"`
}

// serviceAccountLocked finds the account of projects/P/serviceAccounts/EMAIL
// (P may be "-"). Call with s.mu held.
func (s *Server) serviceAccountLocked(name string) (*serviceAccountWire, error) {
	v, _ := splitName(name, "projects/*/serviceAccounts/*")
	email := v[1]
	uid := s.serviceAccounts[email]
	if uid == "" {
		return nil, newError(codes.NotFound, "Unknown service account")
	}
	project := ""
	if _, domain, ok := strings.Cut(email, "@"); ok {
		project, _, _ = strings.Cut(domain, ".")
	}
	if v[0] != "-" {
		project = v[0]
	}
	return &serviceAccountWire{Name: "projects/" + project + "/serviceAccounts/" + email, ProjectID: project,
		UniqueID: uid, Email: email}, nil
}

func (s *Server) getServiceAccount(name string) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serviceAccountLocked(name)
}

func (s *Server) testServiceAccountPermissions(r *http.Request, name string) (any, error) {
	var in permissionsWire
	if err := decodeBody(r, &in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.serviceAccountLocked(name); err != nil {
		return nil, err
	}
	return permissionsWire{Permissions: s.heldLocked(in.Permissions)}, nil
}

// TestIamPermissions answers which of the permissions the caller has on a
// secret: all but those DenyPermission took away, and none for a secret
// that does not exist (no NOT_FOUND, as the real API documents). It needs
// no permission of its own.
func (m *smServer) TestIamPermissions(ctx context.Context, req *iampb.TestIamPermissionsRequest) (*iampb.TestIamPermissionsResponse, error) {
	s := m.s
	if err := s.enter(ctx, "secretmanager.TestIamPermissions"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &iampb.TestIamPermissionsResponse{}
	p, _, _, err := parseSecretName(req.GetResource())
	if err != nil {
		return nil, err
	}
	if s.project(p) != nil {
		// A disabled API refuses this call too (strictest reading).
		if _, err := s.smProject(p, "secretmanager.secrets.get", req.GetResource()); err != nil {
			return nil, err
		}
	}
	if _, err := s.lookupSecret(req.GetResource(), inspect); err != nil {
		return resp, nil // no such secret, or a project the caller cannot see
	}
	resp.Permissions = s.heldLocked(req.GetPermissions())
	return resp, nil
}
