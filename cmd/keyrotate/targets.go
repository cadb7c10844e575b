package main

import (
	"github.com/keyrotate/keyrotate/config"
	"github.com/keyrotate/keyrotate/rotate"
	"github.com/keyrotate/keyrotate/targets"
)

// localTarget builds a target that needs no Google client (a file, a
// command), or returns nil. newJob reads these before any API call, so that
// a missing file or variable stops the run having called nothing.
func localTarget(t config.Target) rotate.Target {
	switch t.Type {
	case config.TargetDotEnv:
		return targets.NewDotEnv(t.Path, t.Var)
	}
	return nil
}

// target builds any target of the config. The config was validated, so
// every type is known.
func (j *job) target(t config.Target) rotate.Target {
	if lt := localTarget(t); lt != nil {
		return lt
	}
	switch t.Type {
	case config.TargetSecretManager:
		return targets.NewSecretManager(j.clients.secrets, t.Secret)
	}
	panic("keyrotate: no builder for target type " + t.Type + " (config accepts it)")
}

// tempFilePath names the file whose interrupted atomic writes leave temp
// files next to it, for targets that write files.
func tempFilePath(t config.Target) string {
	switch t.Type {
	case config.TargetDotEnv:
		return t.Path
	}
	return ""
}
