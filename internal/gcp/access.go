package gcp

import (
	"context"
	"strings"

	"google.golang.org/api/cloudresourcemanager/v3"
	iamapi "google.golang.org/api/iam/v1"
	"google.golang.org/api/serviceusage/v1"
)

// AccessClients are the read-only clients a plan proves the caller's
// access with: which IAM permissions it holds, which APIs are enabled, and
// whether a service account exists. Each call is retried under Retry.
type AccessClients struct {
	Projects *cloudresourcemanager.Service // projects.testIamPermissions
	Services *serviceusage.Service         // services.batchGet
	IAM      *iamapi.Service               // serviceAccounts.get, .testIamPermissions
	Retry    RetryPolicy
}

// ProjectPermissions returns which of perms the caller holds on project
// (Resource Manager projects.testIamPermissions: no permission needed to
// ask).
func (a *AccessClients) ProjectPermissions(ctx context.Context, project string, perms []string) ([]string, error) {
	var held []string
	err := a.Retry.Do(ctx, func(ctx context.Context, _ Attempt) error {
		resp, err := a.Projects.Projects.TestIamPermissions("projects/"+project,
			&cloudresourcemanager.TestIamPermissionsRequest{Permissions: perms}).Context(ctx).Do()
		if err == nil {
			held = resp.Permissions
		}
		return err
	})
	return held, err
}

// ServiceStates returns the state ("ENABLED", "DISABLED") of each of the
// services (e.g. "apikeys.googleapis.com") on project, by service name
// (Service Usage services.batchGet, which needs serviceusage.services.get).
func (a *AccessClients) ServiceStates(ctx context.Context, project string, services []string) (map[string]string, error) {
	parent := "projects/" + project
	names := make([]string, len(services))
	for i, s := range services {
		names[i] = parent + "/services/" + s
	}
	var resp *serviceusage.BatchGetServicesResponse
	err := a.Retry.Do(ctx, func(ctx context.Context, _ Attempt) error {
		var err error
		resp, err = a.Services.Services.BatchGet(parent).Names(names...).Context(ctx).Do()
		return err
	})
	if err != nil {
		return nil, err
	}
	state := map[string]string{}
	for _, s := range resp.Services {
		state[s.Name[strings.LastIndex(s.Name, "/")+1:]] = s.State
	}
	return state, nil
}

// ServiceAccount reads the service account email (IAM serviceAccounts.get):
// nil when it exists; IsNotFound(err) when it does not.
func (a *AccessClients) ServiceAccount(ctx context.Context, email string) error {
	return a.Retry.Do(ctx, func(ctx context.Context, _ Attempt) error {
		_, err := a.IAM.Projects.ServiceAccounts.Get("projects/-/serviceAccounts/" + email).Context(ctx).Do()
		return err
	})
}

// ServiceAccountPermissions returns which of perms the caller holds on the
// service account email (its testIamPermissions).
func (a *AccessClients) ServiceAccountPermissions(ctx context.Context, email string, perms []string) ([]string, error) {
	var held []string
	err := a.Retry.Do(ctx, func(ctx context.Context, _ Attempt) error {
		resp, err := a.IAM.Projects.ServiceAccounts.TestIamPermissions("projects/-/serviceAccounts/"+email,
			&iamapi.TestIamPermissionsRequest{Permissions: perms}).Context(ctx).Do()
		if err == nil {
			held = resp.Permissions
		}
		return err
	})
	return held, err
}
