package main

import (
	"errors"
	"github.com/keyrotate/keyrotate/internal/errhint"

	"github.com/urfave/cli/v2"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/internal/gcp"
)

// quotaProjectEnv names the quota project, as it does for Google's own
// client libraries and gcloud.
const quotaProjectEnv = "GOOGLE_CLOUD_QUOTA_PROJECT"

// quotaProjectFlag is the global --quota-project flag; its value comes
// from the command line, else from GOOGLE_CLOUD_QUOTA_PROJECT.
func quotaProjectFlag() cli.Flag {
	return &cli.StringFlag{Name: "quota-project", EnvVars: []string{quotaProjectEnv},
		Usage: "charge the API Keys and Secret Manager calls to `PROJECT` " +
			"(sent as x-goog-user-project; overrides defaults.quota_project; default: the credentials' own)"}
}

// checkQuotaProject refuses a --quota-project (or GOOGLE_CLOUD_QUOTA_PROJECT)
// that is not a project id or number.
func checkQuotaProject(c *cli.Context) error {
	if p := c.String("quota-project"); p != "" && !config.ValidProject(p) {
		return errhint.With(usagef("--quota-project %q (or %s) is not a project id or number", p, quotaProjectEnv), config.ProjectHint)
	}
	return nil
}

// quotaProjectOf returns the project the calls are charged to: the
// --quota-project flag, else GOOGLE_CLOUD_QUOTA_PROJECT, else the config's
// defaults.quota_project (cfg may be nil), else "" (the credentials
// decide).
func quotaProjectOf(c *cli.Context, cfg *config.Config) string {
	if p := c.String("quota-project"); p != "" {
		return p
	}
	if cfg != nil {
		return cfg.Defaults.QuotaProject
	}
	return ""
}

// quotaProjectHint adds keyrotate's own ways to name a quota project to the
// hint h of a call refused because of the project it was charged to.
func quotaProjectHint(err error, h string) string {
	var ce *gcp.ConsumerError
	if !errors.As(err, &ce) {
		return h
	}
	switch {
	case ce.SharedClient():
		p := ce.Project
		if p == "" {
			p = "PROJECT"
		}
		return h + "; or name it for keyrotate alone: --quota-project " + p + ", " + quotaProjectEnv + "=" + p + ", or defaults.quota_project in the config"
	case ce.Reason == gcp.ReasonUserProjectDenied:
		return h + " (--quota-project, " + quotaProjectEnv + " or defaults.quota_project)"
	}
	return h + " (--quota-project, " + quotaProjectEnv + " or defaults.quota_project names the project charged)"
}
