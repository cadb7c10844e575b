package main

import (
	"time"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
)

// localTarget builds a target that needs no Google client (a file, a
// command), or returns nil. newJob reads these before any API call (see
// readLocalTargets), so that a missing file or variable stops the run
// having called nothing.
func localTarget(t config.Target) rotate.Target {
	switch t.Type {
	case config.TargetDotEnv:
		d := targets.NewDotEnv(t.Path, t.Var)
		if t.AllowWorldReadable {
			d.AllowWorldReadable()
		}
		return d
	case config.TargetCompose:
		c := targets.NewCompose(t.Path, t.Services, t.Var)
		if t.AllowWorldReadable {
			c.AllowWorldReadable()
		}
		if t.Reload {
			var timeout time.Duration
			if t.Timeout != nil {
				timeout = time.Duration(*t.Timeout)
			}
			c.EnableReload(timeout)
		}
		return c
	case config.TargetExec:
		// Log nil: the runs go to slog.Default().
		return targets.NewExec(t.Command, targets.ExecOptions{ReadBack: t.ReadBack, Timeout: t.ExecTimeout(),
			Env: t.Env, ShowOutput: t.ShowOutput})
	}
	return nil
}

// remoteTarget builds a target that lives in a service (Secret Manager,
// Cloud Run, GitHub, Kubernetes): every type localTarget does not build.
// The config was validated, so every type is known.
func (j *job) remoteTarget(t config.Target) rotate.Target {
	switch t.Type {
	case config.TargetSecretManager:
		return targets.NewSecretManager(j.clients.secretsFor(t.Secret), t.Secret)
	case config.TargetCloudRun:
		// A secret reference in the service reads the secret through the
		// global endpoint (Cloud Run references global secrets).
		tg := targets.NewCloudRun(j.clients.run, j.clients.secrets, t.Service, t.Container, t.Var)
		tg.ConnectErr = j.clients.runErr
		return tg
	case config.TargetGitHub:
		return targets.NewGitHub(targets.GitHubConfig{Repo: t.Repo, Environment: t.Environment, Org: t.Org,
			Name: t.Name, TokenEnv: t.TokenEnv, BaseURL: t.BaseURL})
	case config.TargetK8s:
		return targets.NewK8s(targets.K8sConfig{Kubeconfig: t.Kubeconfig, Context: t.Context, Namespace: t.Namespace,
			Name: t.Name, Key: t.Key, Restart: t.Restart, RolloutTimeout: t.K8sTimeout()})
	}
	panic("keyrotate: no builder for target type " + t.Type + " (config accepts it)")
}

// tempFilePath names the file whose interrupted atomic writes leave temp
// files next to it, for targets that write files.
func tempFilePath(t config.Target) string {
	switch t.Type {
	case config.TargetDotEnv, config.TargetCompose:
		return t.Path
	}
	return ""
}
