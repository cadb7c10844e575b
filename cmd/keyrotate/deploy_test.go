package main

// The Dockerfile and the manifests under deploy/ run keyrotate with commands,
// flags and environment variables of their own. These tests read them the
// way the engines do (container command and args, ENTRYPOINT and CMD, the
// shell of a workflow's run steps and of the README's sh blocks) and check
// every invocation against the CLI that newApp builds, so that a renamed or
// removed flag fails here and not in somebody's scheduled rotation at 03:17.
// They also parse the example keyrotate.yaml files with config.Parse, decode
// the Kubernetes and Cloud Run objects strictly into the APIs' Go types, and
// check what keeps the engines and keyrotate in step: shard counts,
// deadlines against --timeout, the config file's mount, the image's build.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	runv1 "google.golang.org/api/run/v1"
	"gopkg.in/yaml.v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/keyrotate/keyrotate/internal/config"
	"github.com/keyrotate/keyrotate/rotate"
)

// TestDeployManifests checks the repository's Dockerfile and deploy/**.
func TestDeployManifests(t *testing.T) {
	root := filepath.Join("..", "..")
	files := map[string][]byte{}
	for _, name := range []string{"Dockerfile", "go.mod"} {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	c := checkDeploy(files)
	for _, p := range c.problems {
		t.Error(p)
	}
	// A file the checker no longer understands would pass silently.
	for _, f := range []string{"Dockerfile", "deploy/kubernetes/cronjob.yaml", "deploy/cloudrun/job.yaml", "deploy/cloudrun/service.yaml", "deploy/cloudrun/rotation-events.sh", "deploy/github/keyrotate.yml"} {
		if c.invocations[f] == 0 {
			t.Errorf("%s: found no keyrotate invocation: the file moved, or this test no longer understands it", f)
		}
	}
	for _, f := range []string{"deploy/kubernetes/configmap.yaml", "deploy/cloudrun/keyrotate.yaml"} {
		if c.configs[f] == 0 {
			t.Errorf("%s: found no keyrotate.yaml to parse", f)
		}
	}
	if len(c.granted) == 0 || len(c.enabled) == 0 {
		t.Errorf("deploy/ grants no role (gcloud projects add-iam-policy-binding) or enables no API (gcloud services enable): " +
			"the setup moved, or this test no longer understands it")
	}
	if t.Failed() {
		t.Log("the Dockerfile and deploy/ must run keyrotate with commands, flags and variables it has: fix the file named above, or the CLI")
	}
}

// TestDeployCheckerCatchesRot feeds the checker synthetic manifests: each
// broken one must be caught with the file, the line and the cause, and the
// valid one must pass.
func TestDeployCheckerCatchesRot(t *testing.T) {
	cronJob := func(completions string, args ...string) string {
		return `apiVersion: batch/v1
kind: CronJob
metadata:
  name: keyrotate
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      completionMode: Indexed
      completions: ` + completions + `
      activeDeadlineSeconds: 7200
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: keyrotate
              image: example.com/keyrotate:v1
              env:
                - name: KEYROTATE_CONFIG
                  value: /etc/keyrotate/keyrotate.yaml
              args: [` + strings.Join(args, ", ") + `]
              volumeMounts:
                - name: config
                  mountPath: /etc/keyrotate
          volumes:
            - name: config
              configMap:
                name: keyrotate-config
`
	}
	const configMap = `apiVersion: v1
kind: ConfigMap
metadata:
  name: keyrotate-config
data:
  keyrotate.yaml: |
    version: 1
    slots:
      - name: gemini-prod
        project: my-project
        secret: projects/my-project/secrets/gemini-api-key
`
	runService := func(timeout string, args ...string) string {
		return `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: keyrotate-serve
spec:
  template:
    spec:
      timeoutSeconds: ` + timeout + `
      containers:
        - image: example.com/keyrotate:v1
          args: [` + strings.Join(args, ", ") + `]
          env:
            - name: KEYROTATE_CONFIG
              value: /etc/keyrotate/keyrotate.yaml
            - name: KEYROTATE_PUSH_AUDIENCE
              value: https://x.a.run.app
            - name: KEYROTATE_PUSH_SERVICE_ACCOUNT
              value: push@p.iam.gserviceaccount.com
          volumeMounts:
            - name: config
              mountPath: /etc/keyrotate
      volumes:
        - name: config
          secret:
            secretName: keyrotate-config
`
	}
	workflow := func(run string) string {
		return `name: keyrotate
on:
  workflow_dispatch:
jobs:
  rotate:
    runs-on: ubuntu-latest
    timeout-minutes: 120
    steps:
      - name: rotate
        run: |
` + deployIndent(run, "          ")
	}

	tests := []struct {
		name  string
		files map[string][]byte
		want  []string // substrings of the problems, each in some problem; none: no problem
	}{{
		name: "valid",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "--timeout", "1h30m", "rotate", "--now", "-s", "gemini-prod")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
			"deploy/gh/wf.yml": []byte(workflow(`set -euo pipefail
KEYROTATE_CONFIG=cfg.yaml go run github.com/keyrotate/keyrotate/cmd/keyrotate@v1.2.3 \
  --output=json \
  -c keyrotate.yaml \
  rotate --grace=24h --now --slot 'gemini-*' 2>&1 | tee out.txt  # a comment
keyrotate abort gemini-prod && ./bin/keyrotate --help
`)),
		},
	}, {
		name: "unknown flag",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "rotate", "--no-such-flag")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{"deploy/k8s/cronjob.yaml:21: unknown flag --no-such-flag for `keyrotate rotate`"},
	}, {
		name: "wrong command",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "--output", "json", "rotat", "--now")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{`deploy/k8s/cronjob.yaml:21: unknown command "rotat"`},
	}, {
		// keyrotate reads a global flag after the command (args.go): its
		// value is still checked there.
		name: "global flag after the command with a bad value",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "rotate", "--now", "--timeout", "90")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{`deploy/k8s/cronjob.yaml:21: --timeout "90" is not a duration`},
	}, {
		name:  "wrong command behind a line continuation",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("go run github.com/keyrotate/keyrotate/cmd/keyrotate@latest \\\n  --timeout 1h \\\n  rotat \\\n  --now\n"))},
		want:  []string{`deploy/gh/wf.yml:13: unknown command "rotat"`},
	}, {
		name:  "unknown flag behind a line continuation",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate rotate \\\n  --now \\\n  --bogus\n"))},
		want:  []string{"deploy/gh/wf.yml:13: unknown flag --bogus for `keyrotate rotate`"},
	}, {
		name:  "boolean flag with a separate value",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate rotate --now true\n"))},
		want:  []string{"deploy/gh/wf.yml:11: boolean flag --now takes no separate value"},
	}, {
		name:  "flag without its value",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate rotate --now --grace\n"))},
		want:  []string{"deploy/gh/wf.yml:11: flag --grace needs a value"},
	}, {
		name:  "value that does not parse",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate --timeout 90 rotate\n"))},
		want:  []string{`--timeout "90" is not a duration`},
	}, {
		name:  "flags where people put them",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate rotate --now -o json --timeout 1h\nkeyrotate rollback gemini-prod --to projects/p/locations/global/keys/k --config x.yaml\n"))},
	}, {
		// keyrotate reads a command's flags after its argument too (args.go).
		name:  "unknown flag after an argument",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate abort gemini-prod --slot x\n"))},
		want:  []string{"deploy/gh/wf.yml:11: unknown flag --slot for `keyrotate abort`"},
	}, {
		name:  "wrong number of arguments",
		files: map[string][]byte{"deploy/gh/wf.yml": []byte(workflow("keyrotate rollback gemini-prod other --to k\n"))},
		want:  []string{"deploy/gh/wf.yml:11: `keyrotate rollback SLOT` takes 1 argument(s), got 2"},
	}, {
		name: "unknown environment variable",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(strings.Replace(cronJob("1", "rotate"), "KEYROTATE_CONFIG", "KEYROTATE_CONF", 1)),
			"deploy/k8s/configmap.yaml": []byte(configMap),
			"deploy/gh/wf.yml":          []byte(workflow("export KEYROTATE_WEBHOOK=x\n")),
		},
		want: []string{
			"deploy/k8s/cronjob.yaml:19: environment variable KEYROTATE_CONF is read by no keyrotate flag",
			"deploy/gh/wf.yml:11: environment variable KEYROTATE_WEBHOOK is read by no keyrotate flag",
		},
	}, {
		name: "shards that do not match the completions",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("3", "rotate", "--shard-count", "4")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{"deploy/k8s/cronjob.yaml:21: --shard-count 4 does not match the Job's completions (3)"},
	}, {
		name: "deadline shorter than --timeout",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "--timeout", "3h", "rotate")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{"activeDeadlineSeconds (2h0m0s) is not longer than keyrotate's --timeout (3h0m0s)"},
	}, {
		// The slot retires with the drain gate (retire: quiet, the
		// default): propagation_timeout 10m + drain_timeout 1h, after
		// --wait-for-lease 16m.
		name: "no room for the drain gate",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "--timeout", "1h", "rotate", "--wait-for-lease", "16m")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{"deploy/k8s/cronjob.yaml:21: --timeout (1h0m0s) leaves no room for the drain gate: --wait-for-lease 16m0s + " +
			"propagation_timeout and drain_timeout of slot gemini-prod (1h10m0s) = 1h26m0s"},
	}, {
		name: "setup that does not grant the drain gate's role",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "--timeout", "1h30m", "rotate")),
			"deploy/k8s/configmap.yaml": []byte(configMap),
			"deploy/README.md": []byte("# Setup\n\n```sh\nfor p in my-project; do\n" +
				"  gcloud services enable apikeys.googleapis.com secretmanager.googleapis.com --project \"$p\"\n" +
				"  gcloud projects add-iam-policy-binding \"$p\" \\\n    --member \"serviceAccount:${SA}\" --role roles/serviceusage.apiKeysAdmin\ndone\n```\n"),
		},
		want: []string{
			"deploy/k8s/configmap.yaml:6: slot gemini-prod (retire: quiet) needs roles/monitoring.viewer on its project, and no `gcloud projects add-iam-policy-binding --role roles/monitoring.viewer` in deploy/ grants it",
			"slot gemini-prod (retire: quiet) needs the API monitoring.googleapis.com on its project, and no `gcloud services enable` in deploy/ enables it",
		},
	}, {
		name: "config that does not parse",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(cronJob("1", "rotate")),
			"deploy/k8s/configmap.yaml": []byte(strings.Replace(configMap, "project:", "projet:", 1)),
		},
		want: []string{"deploy/k8s/configmap.yaml:10: keyrotate.yaml in ConfigMap keyrotate-config:"},
	}, {
		name: "config on no mount",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(strings.Replace(cronJob("1", "rotate"), "value: /etc/keyrotate/", "value: /config/", 1)),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{"/config/keyrotate.yaml (KEYROTATE_CONFIG) is on no volumeMount"},
	}, {
		name: "misspelt Kubernetes field",
		files: map[string][]byte{
			"deploy/k8s/cronjob.yaml":   []byte(strings.Replace(cronJob("1", "rotate"), "completions:", "completion:", 1)),
			"deploy/k8s/configmap.yaml": []byte(configMap),
		},
		want: []string{`deploy/k8s/cronjob.yaml:10: batch/v1 CronJob does not match the API: json: unknown field "completion"`},
	}, {
		name:  "Cloud Run service for serve",
		files: map[string][]byte{"deploy/run/service.yaml": []byte(runService("900", "serve", "--audience", "https://x.a.run.app"))},
	}, {
		name:  "Cloud Run service without the push service account",
		files: map[string][]byte{"deploy/run/service.yaml": []byte(strings.Replace(runService("900", "serve"), "KEYROTATE_PUSH_SERVICE_ACCOUNT", "KEYROTATE_PUSH_ACCOUNT", 1))},
		want: []string{
			"deploy/run/service.yaml:1: keyrotate serve needs --push-service-account (or its variable)",
			"environment variable KEYROTATE_PUSH_ACCOUNT is read by no keyrotate flag",
		},
	}, {
		name:  "Cloud Run service with a short request timeout",
		files: map[string][]byte{"deploy/run/service.yaml": []byte(runService("300", "serve"))},
		want:  []string{"deploy/run/service.yaml:8: timeoutSeconds (5m0s) is shorter than a push subscription's ack deadline (10m0s"},
	}, {
		name:  "Cloud Run service running another command",
		files: map[string][]byte{"deploy/run/service.yaml": []byte(runService("900", "rotate"))},
		want:  []string{"a Cloud Run service must run `keyrotate serve`, not `keyrotate rotate`"},
	}, {
		name:  "Cloud Run service with an unknown serve flag",
		files: map[string][]byte{"deploy/run/service.yaml": []byte(runService("900", "serve", "--audiance", "x"))},
		want:  []string{"unknown flag --audiance for `keyrotate serve`"},
	}, {
		name: "Dockerfile with cgo on alpine",
		files: map[string][]byte{"Dockerfile": []byte(`FROM golang:1.26 AS build
WORKDIR /src
COPY . .
RUN go build -o /out/keyrotate \
    ./cmd/keyrotate
FROM alpine:3
COPY --from=build /out/keyrotate /usr/bin/keyrotate
ENTRYPOINT ["/usr/bin/keyrotate"]
CMD ["rotat"]
`)},
		want: []string{
			"Dockerfile:4: go build without CGO_ENABLED=0",
			"Dockerfile:6: the final stage is alpine:3, want gcr.io/distroless/static-debian12:nonroot",
			`Dockerfile:9: unknown command "rotat"`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := checkDeploy(tt.files)
			if len(tt.want) == 0 {
				for _, p := range c.problems {
					t.Errorf("unexpected problem: %s", p)
				}
				return
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(c.problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("problems = %q, want one containing %q", c.problems, w)
				}
			}
		})
	}
}

func deployIndent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}

// deployChecker holds what the CLI defines and collects problems.
type deployChecker struct {
	global      map[string]cli.Flag // by each name and alias
	globalFlags []cli.Flag
	commands    []*cli.Command
	envVars     map[string]bool // the EnvVars of every flag
	timeout     time.Duration   // --timeout's default

	goVersion  string                // go.mod's go directive (major.minor)
	imageUser  string                // USER of the Dockerfile's final stage
	imageCmd   []string              // CMD of the Dockerfile's final stage
	configMaps map[string]*yaml.Node // ConfigMap name -> its data

	problems    []string
	invocations map[string]int // keyrotate invocations found, by file
	configs     map[string]int // keyrotate.yaml documents parsed, by file

	// needs are the roles and APIs the example configurations' slots need
	// on their projects (rotate.ProjectAccess), each with the first slot
	// that needs it; granted and enabled are the roles and APIs deploy/'s
	// shell grants (gcloud projects add-iam-policy-binding --role) and
	// enables (gcloud services enable).
	needs            map[string]deployNeed
	granted, enabled map[string]bool
	// gateWait is the longest a slot's rotation may wait for its new key
	// and then for the drain gate (propagation_timeout + drain_timeout of
	// a slot with retire: quiet), and gateSlot that slot.
	gateWait time.Duration
	gateSlot string
	rotates  []deployRotate // the rotate invocations
}

// deployNeed is a role or an API a slot of an example configuration needs.
type deployNeed struct {
	file, slot, retire string
	line               int
	api                bool
}

// deployRotate is one rotate invocation.
type deployRotate struct {
	file string
	line int
	inv  *deployInvocation
}

// deployInvocation is one run of keyrotate found in a file.
type deployInvocation struct {
	cmd    *cli.Command
	global map[string]string // global flags by canonical name ("true" for a bare boolean)
	flags  map[string]string // the command's flags (and unknown ones, taken to have a value)
	lines  map[string]int    // the line of each flag
}

// checkDeploy checks files (by slash-separated path from the repository
// root): the Dockerfile, go.mod, and YAML, shell and Markdown files.
func checkDeploy(files map[string][]byte) *deployChecker {
	app := newApp(io.Discard, io.Discard)
	global := app.Flags
	if !app.HideVersion { // urfave/cli adds --version when it runs
		global = append(slices.Clip(global), cli.VersionFlag)
	}
	c := &deployChecker{
		global:      deployFlags(global),
		globalFlags: global,
		commands:    app.Commands,
		envVars:     map[string]bool{},
		timeout:     90 * time.Minute,
		configMaps:  map[string]*yaml.Node{},
		invocations: map[string]int{},
		configs:     map[string]int{},
		needs:       map[string]deployNeed{},
		granted:     map[string]bool{},
		enabled:     map[string]bool{},
	}
	var collect func(fs []cli.Flag, cmds []*cli.Command)
	collect = func(fs []cli.Flag, cmds []*cli.Command) {
		for _, f := range fs {
			if d, ok := f.(cli.DocGenerationFlag); ok {
				for _, e := range d.GetEnvVars() {
					c.envVars[e] = true
				}
			}
		}
		for _, cmd := range cmds {
			collect(cmd.Flags, cmd.Subcommands)
		}
	}
	collect(app.Flags, app.Commands)
	if f, ok := c.global["timeout"].(*cli.DurationFlag); ok {
		c.timeout = f.Value
	}
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(files["go.mod"]); m != nil {
		c.goVersion = string(m[1])
	}
	if data, ok := files["Dockerfile"]; ok {
		c.checkDockerfile("Dockerfile", data)
	}

	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	docs := map[string][]*yaml.Node{}
	for _, name := range names {
		if ext := path.Ext(name); ext != ".yaml" && ext != ".yml" {
			continue
		}
		if path.Base(name) == "keyrotate.yaml" {
			c.checkConfig(name, files[name], "keyrotate.yaml", 0, 0)
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(files[name]))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if err == io.EOF {
				break
			}
			if err != nil {
				c.problemf(name, 0, "not valid YAML: %v", err)
				break
			}
			if len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
				docs[name] = append(docs[name], doc.Content[0])
			}
		}
	}
	// ConfigMaps first: containers refer to them.
	for _, name := range names {
		for _, doc := range docs[name] {
			if ystr(yget(doc, "apiVersion")) == "v1" && ystr(yget(doc, "kind")) == "ConfigMap" {
				c.configMaps[ystr(yget(yget(doc, "metadata"), "name"))] = yget(doc, "data")
			}
		}
	}
	for _, name := range names {
		switch path.Ext(name) {
		case ".yaml", ".yml":
			for _, doc := range docs[name] {
				c.checkYAML(name, doc)
			}
		case ".sh":
			c.checkScript(name, string(files[name]), 1)
		case ".md":
			c.checkMarkdown(name, string(files[name]))
		}
	}
	c.checkAccessGranted()
	c.checkGateRoom()
	return c
}

// checkAccessGranted checks that deploy/'s setup grants every role and
// enables every API that the example slots need on their projects (the
// drain gate's roles/monitoring.viewer and monitoring.googleapis.com for a
// slot with retire: quiet). Files that grant nothing (a manifest alone) are
// not checked; TestDeployManifests checks that deploy/ grants something.
func (c *deployChecker) checkAccessGranted() {
	if len(c.granted) == 0 && len(c.enabled) == 0 {
		return
	}
	names := make([]string, 0, len(c.needs))
	for n := range c.needs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		need := c.needs[n]
		switch {
		case need.api && !c.enabled[n]:
			c.problemf(need.file, need.line, "slot %s (retire: %s) needs the API %s on its project, and no `gcloud services enable` in deploy/ enables it", need.slot, need.retire, n)
		case !need.api && !c.granted[n]:
			c.problemf(need.file, need.line, "slot %s (retire: %s) needs %s on its project, and no `gcloud projects add-iam-policy-binding --role %s` in deploy/ grants it", need.slot, need.retire, n, n)
		}
	}
}

// checkGateRoom checks that each rotate invocation's --timeout leaves room
// for the longest wait of a slot: a lease held by another run
// (--wait-for-lease), the new key's propagation and the drain gate.
func (c *deployChecker) checkGateRoom() {
	if c.gateWait == 0 {
		return
	}
	for _, r := range c.rotates {
		if _, leaked := r.inv.flags["leaked"]; leaked {
			continue
		}
		var lease time.Duration
		if v, ok := r.inv.flags["wait-for-lease"]; ok {
			d, _ := config.ParseDuration(v)
			lease = time.Duration(d)
		}
		line := r.line
		if l, ok := r.inv.lines["timeout"]; ok {
			line = l
		}
		if t, need := c.effectiveTimeout(r.inv), lease+c.gateWait; t <= need {
			c.problemf(r.file, line, "--timeout (%s) leaves no room for the drain gate: --wait-for-lease %s + propagation_timeout and drain_timeout of slot %s (%s) = %s; "+
				"make --timeout longer, and the engine's deadline with it", t, lease, c.gateSlot, c.gateWait, need)
		}
	}
}

func (c *deployChecker) problemf(file string, line int, format string, args ...any) {
	where := file
	if line > 0 {
		where += ":" + strconv.Itoa(line)
	}
	c.problems = append(c.problems, where+": "+fmt.Sprintf(format, args...))
}

// deployFlags indexes flags by each of their names, with the help flag
// urfave/cli adds to every command.
func deployFlags(fs []cli.Flag) map[string]cli.Flag {
	m := map[string]cli.Flag{}
	for _, f := range append(slices.Clone(fs), cli.HelpFlag) {
		for _, n := range f.Names() {
			if _, ok := m[n]; !ok {
				m[n] = f
			}
		}
	}
	return m
}

func deployDashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func deployFlagList(fs []cli.Flag) string {
	var names []string
	for _, f := range fs {
		names = append(names, deployDashed(f.Names()[0]))
	}
	return strings.Join(names, ", ")
}

func deployTakesValue(f cli.Flag) bool {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.TakesValue()
	}
	return true
}

// deployIsFlag reports whether the flag package would read a as a flag
// (negative numbers are values).
func deployIsFlag(a string) bool {
	return len(a) > 1 && a[0] == '-' && a != "--" && !(a[1] >= '0' && a[1] <= '9')
}

// deployDynamic reports whether a value is filled in later (shell, Actions), so
// that its syntax cannot be checked here.
func deployDynamic(v string) bool { return strings.ContainsAny(v, "$`") }

// checkArgv checks keyrotate's arguments (without the program name) the way
// keyrotate reads them (args.go): global flags before or after the command,
// the command's flags before or after its arguments, `--` ending the flags.
// lines[i] is the line of argv[i]; at holds when argv is empty.
func (c *deployChecker) checkArgv(file string, argv []string, lines []int, at int) *deployInvocation {
	inv := &deployInvocation{global: map[string]string{}, flags: map[string]string{}, lines: map[string]int{}}
	line := func(i int) int {
		if i < len(lines) {
			return lines[i]
		}
		return at
	}
	scope, values, subs := c.global, inv.global, c.commands
	var (
		args       []string
		argsLine   []int
		endOfFlags bool
	)
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if a == "--" && !endOfFlags {
			endOfFlags = true
			continue
		}
		if deployIsFlag(a) && !endOfFlags {
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			f, values := scope[name], values
			if f == nil && inv.cmd != nil && c.global[name] != nil {
				f, values = c.global[name], inv.global
			}
			if f == nil {
				c.problemf(file, line(i), "%s", c.unknownFlag(name, inv.cmd))
				// Take an unknown flag to have a value, so that one unknown
				// flag makes one problem.
				if !hasVal && i+1 < len(argv) && !deployIsFlag(argv[i+1]) {
					val = argv[i+1]
					i++
				}
				values[name], inv.lines[name] = val, line(i)
				continue
			}
			canon := f.Names()[0]
			switch {
			case !deployTakesValue(f) && hasVal:
				if _, err := strconv.ParseBool(val); err != nil {
					c.problemf(file, line(i), "boolean flag %s=%s: the value must be true or false", deployDashed(name), val)
				}
			case !deployTakesValue(f):
				val = "true"
				if i+1 < len(argv) {
					if _, err := strconv.ParseBool(argv[i+1]); err == nil {
						c.problemf(file, line(i), "boolean flag %s takes no separate value: %q would end the flags and be taken for an argument (write %s=%s)",
							deployDashed(name), argv[i+1], deployDashed(name), argv[i+1])
						i++
					}
				}
			case hasVal:
			case i+1 == len(argv):
				c.problemf(file, line(i), "flag %s needs a value (%s VALUE or %s=VALUE)", deployDashed(name), deployDashed(name), deployDashed(name))
				continue
			case deployIsFlag(argv[i+1]) && (scope[strings.TrimLeft(strings.SplitN(argv[i+1], "=", 2)[0], "-")] != nil || c.global[strings.TrimLeft(strings.SplitN(argv[i+1], "=", 2)[0], "-")] != nil):
				c.problemf(file, line(i), "flag %s needs a value, but %s follows it", deployDashed(name), argv[i+1])
				continue
			default:
				i++
				val = argv[i]
			}
			c.checkValue(file, line(i), f, name, val)
			values[canon], inv.lines[canon] = val, line(i)
			continue
		}
		if len(args) == 0 && (inv.cmd == nil || len(subs) > 0) {
			if sub := deployFindCommand(subs, a); sub != nil {
				inv.cmd, subs = sub, sub.Subcommands
				scope, values, endOfFlags = deployFlags(sub.Flags), inv.flags, false
				continue
			}
			if inv.cmd == nil {
				if a != "help" && a != "h" {
					c.problemf(file, line(i), "unknown command %q (keyrotate's commands: %s)", a, deployCommandList(c.commands))
				}
				return inv
			}
		}
		args, argsLine = append(args, a), append(argsLine, line(i))
	}
	if inv.cmd != nil && inv.cmd.Name == "rotate" {
		c.rotates = append(c.rotates, deployRotate{file, at, inv})
	}
	if inv.cmd == nil {
		_, help := inv.global["help"]
		if _, version := inv.global["version"]; !help && !version {
			c.problemf(file, line(0), "keyrotate without a command only prints its help (commands: %s)", deployCommandList(c.commands))
		}
		return inv
	}
	if len(args) > 0 && strings.TrimSpace(inv.cmd.ArgsUsage) == "" && len(inv.cmd.Subcommands) == 0 {
		c.problemf(file, argsLine[0], "`keyrotate %s` takes no arguments, got %q", inv.cmd.Name, args[0])
	} else if want := strings.Fields(inv.cmd.ArgsUsage); len(want) > 0 && len(args) != len(want) {
		c.problemf(file, line(0), "`keyrotate %s %s` takes %d argument(s), got %d", inv.cmd.Name, inv.cmd.ArgsUsage, len(want), len(args))
	}
	return inv
}

func deployFindCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, cmd := range cmds {
		if cmd.HasName(name) {
			return cmd
		}
	}
	return nil
}

func deployCommandList(cmds []*cli.Command) string {
	var names []string
	for _, cmd := range cmds {
		names = append(names, cmd.Name)
	}
	return strings.Join(names, ", ")
}

// unknownFlag says why name is not a flag where it stands.
func (c *deployChecker) unknownFlag(name string, cmd *cli.Command) string {
	if cmd == nil {
		for _, other := range c.commands {
			if deployFlags(other.Flags)[name] != nil {
				return fmt.Sprintf("%s is not a global flag but a flag of `keyrotate %s`: put it after the command", deployDashed(name), other.Name)
			}
		}
		return fmt.Sprintf("unknown global flag %s (global flags: %s)", deployDashed(name), deployFlagList(c.globalFlags))
	}
	return fmt.Sprintf("unknown flag %s for `keyrotate %s` (its flags: %s)", deployDashed(name), cmd.Name, deployFlagList(cmd.Flags))
}

// checkValue checks the syntax of a flag's value where its type says it.
func (c *deployChecker) checkValue(file string, line int, f cli.Flag, name, val string) {
	if deployDynamic(val) {
		return
	}
	switch f.(type) {
	case *cli.DurationFlag:
		if _, err := time.ParseDuration(val); err != nil {
			c.problemf(file, line, "%s %q is not a duration (for example 50m or 1h30m)", deployDashed(name), val)
		}
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		if _, err := strconv.Atoi(val); err != nil {
			c.problemf(file, line, "%s %q is not a whole number", deployDashed(name), val)
		}
	}
}

func (c *deployChecker) checkEnvName(file string, line int, name string) {
	if !strings.HasPrefix(name, "KEYROTATE_") || c.envVars[name] {
		return
	}
	var known []string
	for e := range c.envVars {
		known = append(known, e)
	}
	sort.Strings(known)
	c.problemf(file, line, "environment variable %s is read by no keyrotate flag (the flags read %s)", name, strings.Join(known, ", "))
}

// effectiveTimeout is the --timeout an invocation runs with.
func (c *deployChecker) effectiveTimeout(inv *deployInvocation) time.Duration {
	if v, ok := inv.global["timeout"]; ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return c.timeout
}

// checkDeadline checks that an engine's deadline leaves keyrotate the time
// to end by its own --timeout, which stops a rotation cleanly.
func (c *deployChecker) checkDeadline(file string, line int, what string, deadline time.Duration, inv *deployInvocation) {
	if t := c.effectiveTimeout(inv); deadline <= t {
		c.problemf(file, line, "%s (%s) is not longer than keyrotate's --timeout (%s): the engine would kill keyrotate before it stops cleanly; make it a little longer, or --timeout shorter", what, deadline, t)
	}
}

// --- YAML ---

func yget(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func ystr(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func yseq(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

func yint(n *yaml.Node, def int) int {
	if v, err := strconv.Atoi(ystr(n)); err == nil {
		return v
	}
	return def
}

func ytrue(n *yaml.Node) bool { return ystr(n) == "true" }

// ykeyLine returns the line of the first key named key in n, or n's line.
func ykeyLine(n *yaml.Node, key string) int {
	var find func(*yaml.Node) int
	find = func(n *yaml.Node) int {
		for i, ch := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 && ch.Value == key {
				return ch.Line
			}
			if l := find(ch); l > 0 {
				return l
			}
		}
		return 0
	}
	if l := find(n); l > 0 {
		return l
	}
	return n.Line
}

// ycontentLine is the line of the first line of a scalar's value: a block
// scalar (| or >) starts on the line after its indicator.
func ycontentLine(n *yaml.Node) int {
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return n.Line + 1
	}
	return n.Line
}

func (c *deployChecker) checkYAML(file string, doc *yaml.Node) {
	apiVersion, kind := ystr(yget(doc, "apiVersion")), ystr(yget(doc, "kind"))
	switch {
	case apiVersion != "" && kind != "":
		c.checkSchema(file, doc, apiVersion, kind)
	case yget(doc, "jobs") != nil && yget(doc, "on") != nil:
		c.checkWorkflow(file, doc)
		return
	default:
		return
	}
	spec := yget(doc, "spec")
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		data := yget(doc, "data")
		name := ystr(yget(yget(doc, "metadata"), "name"))
		if v := yget(data, "keyrotate.yaml"); v != nil {
			c.checkConfigValue(file, v, "keyrotate.yaml in ConfigMap "+name)
		}
	case "batch/v1 CronJob":
		c.checkK8sJob(file, yget(yget(spec, "jobTemplate"), "spec"), doc)
	case "batch/v1 Job":
		c.checkK8sJob(file, spec, doc)
	case "run.googleapis.com/v1 Job":
		c.checkCloudRunJob(file, yget(yget(spec, "template"), "spec"), doc)
	case "serving.knative.dev/v1 Service":
		c.checkCloudRunService(file, yget(yget(spec, "template"), "spec"), doc)
	}
}

// pushAckDeadline is the longest ack deadline a push subscription can
// have: Pub/Sub waits this long for a push's answer, then delivers the
// message again.
const pushAckDeadline = 600 * time.Second

// checkCloudRunService checks a Cloud Run service that runs keyrotate
// serve: the command, the two settings every push is checked against, and
// a request timeout that outlasts the push's ack deadline.
func (c *deployChecker) checkCloudRunService(file string, spec, doc *yaml.Node) {
	invs := c.checkContainers(file, spec, false)
	if len(invs) == 0 {
		c.problemf(file, doc.Line, "found no keyrotate container (an image named keyrotate, or command /keyrotate)")
	}
	ctrs := yseq(yget(spec, "containers"))
	for i, inv := range invs {
		if inv.cmd == nil {
			continue
		}
		if inv.cmd.Name != "serve" {
			c.problemf(file, doc.Line, "a Cloud Run service must run `keyrotate serve`, not `keyrotate %s`", inv.cmd.Name)
			continue
		}
		env := map[string]bool{}
		if i < len(ctrs) {
			for _, e := range yseq(yget(ctrs[i], "env")) {
				env[ystr(yget(e, "name"))] = ystr(yget(e, "value")) != "" || yget(e, "valueFrom") != nil
			}
		}
		for _, name := range []string{"audience", "push-service-account"} {
			if _, ok := inv.flags[name]; ok {
				continue
			}
			set := false
			if f, ok := deployFlags(inv.cmd.Flags)[name].(cli.DocGenerationFlag); ok {
				for _, e := range f.GetEnvVars() {
					set = set || env[e]
				}
			}
			if !set {
				c.problemf(file, doc.Line, "keyrotate serve needs --%s (or its variable): it refuses to start without it", name)
			}
		}
	}
	timeout, line := 300, doc.Line // Cloud Run's default request timeout: 5 minutes
	if n := yget(spec, "timeoutSeconds"); n != nil {
		timeout, line = yint(n, 0), n.Line
	}
	if d := time.Duration(timeout) * time.Second; d < pushAckDeadline {
		c.problemf(file, line, "timeoutSeconds (%s) is shorter than a push subscription's ack deadline (%s, rotation-events.sh): Cloud Run would cut rotations Pub/Sub still waits for", d, pushAckDeadline)
	}
}

// checkSchema decodes a Kubernetes or Cloud Run object into the API's Go
// type, refusing unknown fields: a misspelt field would be dropped by the
// server (or refused by kubectl's strict validation) at deploy time.
func (c *deployChecker) checkSchema(file string, doc *yaml.Node, apiVersion, kind string) {
	var obj any
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Namespace":
		obj = &corev1.Namespace{}
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "v1 ServiceAccount":
		obj = &corev1.ServiceAccount{}
	case "batch/v1 CronJob":
		obj = &batchv1.CronJob{}
	case "batch/v1 Job":
		obj = &batchv1.Job{}
	case "rbac.authorization.k8s.io/v1 Role":
		obj = &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		obj = &rbacv1.RoleBinding{}
	case "rbac.authorization.k8s.io/v1 ClusterRole":
		obj = &rbacv1.ClusterRole{}
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
		obj = &rbacv1.ClusterRoleBinding{}
	case "run.googleapis.com/v1 Job":
		obj = &runv1.Job{}
	case "serving.knative.dev/v1 Service":
		obj = &runv1.Service{}
	default:
		return
	}
	var v any
	if err := doc.Decode(&v); err != nil {
		c.problemf(file, doc.Line, "%s %s: %v", apiVersion, kind, err)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		c.problemf(file, doc.Line, "%s %s: %v", apiVersion, kind, err)
		return
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		line := doc.Line
		if m := regexp.MustCompile(`unknown field "([^"]+)"`).FindStringSubmatch(err.Error()); m != nil {
			line = ykeyLine(doc, m[1])
		} else if m := regexp.MustCompile(`Go struct field [^ ]*\.([A-Za-z0-9]+) of type`).FindStringSubmatch(err.Error()); m != nil {
			line = ykeyLine(doc, m[1])
		}
		c.problemf(file, line, "%s %s does not match the API: %v", apiVersion, kind, err)
	}
}

// checkConfig parses a keyrotate.yaml with the real parser. offset is the
// line in file just before the document's first line; -1 when lines in the
// document do not map to lines in file, and problems are put at line at.
func (c *deployChecker) checkConfig(file string, data []byte, what string, offset, at int) {
	c.configs[file]++
	cfg, err := config.Parse("keyrotate.yaml", data)
	if err == nil {
		c.addNeeds(file, at, cfg)
		return
	}
	errs := config.Errors(err)
	if len(errs) == 0 {
		c.problemf(file, at, "%s: %v", what, err)
		return
	}
	for _, e := range errs {
		line := at
		if e.Line > 0 && offset >= 0 {
			line = offset + e.Line
		}
		msg := e.Msg
		if h := e.Hint(); h != "" {
			msg += " (hint: " + h + ")"
		}
		c.problemf(file, line, "%s: %s", what, msg)
	}
}

// addNeeds notes what the slots of cfg (in file, at line at) need on
// their projects, and how long their rotations may wait.
func (c *deployChecker) addNeeds(file string, at int, cfg *config.Config) {
	for i := range cfg.Slots {
		s := &cfg.Slots[i]
		retire := cfg.EffectiveRetire(s)
		roles, apis := rotate.ProjectAccess(rotate.RetireMode(retire))
		for j, list := range [][]string{roles, apis} {
			for _, n := range list {
				if _, ok := c.needs[n]; !ok {
					c.needs[n] = deployNeed{file: file, line: at, slot: s.Name, retire: retire, api: j == 1}
				}
			}
		}
		if retire != config.RetireQuiet {
			continue
		}
		if w := time.Duration(cfg.Defaults.PropagationTimeout) + cfg.EffectiveDrainTimeout(s); w > c.gateWait {
			c.gateWait, c.gateSlot = w, s.Name
		}
	}
}

// checkConfigValue parses a keyrotate.yaml held in a YAML string (a
// ConfigMap's data).
func (c *deployChecker) checkConfigValue(file string, v *yaml.Node, what string) {
	if v.Kind != yaml.ScalarNode {
		c.problemf(file, v.Line, "%s is not a string", what)
		return
	}
	// The lines of a block scalar (|) map to lines of the file; those of a
	// quoted string do not.
	offset := -1
	if v.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		offset = ycontentLine(v) - 1
	}
	c.checkConfig(file, []byte(v.Value), what, offset, v.Line)
}

// checkK8sJob checks a batch/v1 Job spec (a CronJob's jobTemplate.spec):
// its keyrotate containers, that the shards match the completions, and that
// activeDeadlineSeconds outlasts --timeout.
func (c *deployChecker) checkK8sJob(file string, jobSpec, doc *yaml.Node) {
	podSpec := yget(yget(jobSpec, "template"), "spec")
	invs := c.checkContainers(file, podSpec, true)
	if len(invs) == 0 {
		c.problemf(file, doc.Line, "found no keyrotate container (an image named keyrotate, or command /keyrotate)")
	}
	completions := yint(yget(jobSpec, "completions"), 1)
	indexed := ystr(yget(jobSpec, "completionMode")) == "Indexed"
	if completions > 1 && !indexed {
		c.problemf(file, yget(jobSpec, "completions").Line, "completions %d without completionMode: Indexed: the pods get no JOB_COMPLETION_INDEX, so all of them would take the same slots", completions)
	}
	for _, inv := range invs {
		if v, ok := inv.flags["shard"]; ok && completions > 1 {
			c.problemf(file, inv.lines["shard"], "--shard %s gives all %d pods the same shard: use --shard-count %d (each pod's index comes from JOB_COMPLETION_INDEX)", v, completions, completions)
		}
		v, ok := inv.flags["shard-count"]
		switch {
		case ok && !deployDynamic(v) && v != strconv.Itoa(completions):
			c.problemf(file, inv.lines["shard-count"], "--shard-count %s does not match the Job's completions (%d): some slots would be rotated by no pod, or by two", v, completions)
		case ok && !indexed:
			c.problemf(file, inv.lines["shard-count"], "--shard-count needs completionMode: Indexed (the pods' index comes from JOB_COMPLETION_INDEX)")
		case !ok && indexed && completions > 1 && inv.cmd != nil && deployFlags(inv.cmd.Flags)["shard-count"] != nil:
			c.problemf(file, doc.Line, "an Indexed Job of %d completions needs `--shard-count %d`, or every pod would take every slot", completions, completions)
		}
		if d := yget(jobSpec, "activeDeadlineSeconds"); d != nil {
			c.checkDeadline(file, d.Line, "activeDeadlineSeconds", time.Duration(yint(d, 0))*time.Second, inv)
		}
	}
}

// checkCloudRunJob checks a Cloud Run Job's execution template: its
// keyrotate containers, the shards, and the task timeout.
func (c *deployChecker) checkCloudRunJob(file string, execSpec, doc *yaml.Node) {
	taskSpec := yget(yget(execSpec, "template"), "spec")
	invs := c.checkContainers(file, taskSpec, false)
	if len(invs) == 0 {
		c.problemf(file, doc.Line, "found no keyrotate container (an image named keyrotate, or command /keyrotate)")
	}
	tasks := yint(yget(execSpec, "taskCount"), 1)
	for _, inv := range invs {
		if v, ok := inv.flags["shard"]; ok && tasks > 1 {
			c.problemf(file, inv.lines["shard"], "--shard %s gives all %d tasks the same shard: drop it (each task's shard comes from CLOUD_RUN_TASK_INDEX and CLOUD_RUN_TASK_COUNT)", v, tasks)
		}
		if v, ok := inv.flags["shard-count"]; ok && !deployDynamic(v) && v != strconv.Itoa(tasks) {
			c.problemf(file, inv.lines["shard-count"], "--shard-count %s does not match taskCount (%d): drop it, Cloud Run sets CLOUD_RUN_TASK_COUNT", v, tasks)
		}
		timeout, line := 600, doc.Line // Cloud Run's default task timeout: 10 minutes
		if n := yget(taskSpec, "timeoutSeconds"); n != nil {
			timeout, line = yint(n, 0), n.Line
		}
		c.checkDeadline(file, line, "timeoutSeconds", time.Duration(timeout)*time.Second, inv)
	}
}

// checkContainers checks the keyrotate containers of a pod spec or a Cloud
// Run task spec (the same shape) and returns their invocations.
func (c *deployChecker) checkContainers(file string, spec *yaml.Node, k8s bool) []*deployInvocation {
	var out []*deployInvocation
	for _, ctr := range yseq(yget(spec, "containers")) {
		env := map[string]*yaml.Node{}
		for _, e := range yseq(yget(ctr, "env")) {
			if n := yget(e, "name"); n != nil {
				c.checkEnvName(file, n.Line, ystr(n))
				env[ystr(n)] = e
			}
		}
		argv, lines, ok := c.containerArgv(ctr)
		if !ok {
			continue
		}
		c.invocations[file]++
		inv := c.checkArgv(file, argv, lines, ctr.Line)
		c.checkConfigMount(file, spec, ctr, inv, env)
		c.checkReportWritable(file, spec, ctr, inv)
		if k8s {
			c.checkNonRoot(file, spec, ctr)
		}
		out = append(out, inv)
	}
	return out
}

// containerArgv returns keyrotate's arguments in a container that runs it:
// command and args, or the image's entrypoint and args (or CMD).
func (c *deployChecker) containerArgv(ctr *yaml.Node) (argv []string, lines []int, ok bool) {
	add := func(items []*yaml.Node) {
		for _, it := range items {
			argv, lines = append(argv, it.Value), append(lines, it.Line)
		}
	}
	args := yget(ctr, "args")
	if cmd := yseq(yget(ctr, "command")); cmd != nil {
		if path.Base(cmd[0].Value) != "keyrotate" {
			return nil, nil, false
		}
		add(cmd[1:])
		add(yseq(args))
		return argv, lines, true
	}
	image := ystr(yget(ctr, "image"))
	if i := strings.IndexAny(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	if path.Base(image) != "keyrotate" {
		return nil, nil, false
	}
	if args == nil {
		if c.imageCmd == nil {
			return nil, nil, false // the image's CMD, not known here
		}
		for range c.imageCmd {
			lines = append(lines, yget(ctr, "image").Line)
		}
		return c.imageCmd, lines, true
	}
	add(yseq(args))
	return argv, lines, true
}

// deployMountOf returns the volumeMount of ctr whose mountPath holds p, and the
// volume it mounts.
func deployMountOf(spec, ctr *yaml.Node, p string) (mount, volume *yaml.Node) {
	best := ""
	for _, m := range yseq(yget(ctr, "volumeMounts")) {
		mp := strings.TrimSuffix(ystr(yget(m, "mountPath")), "/")
		if (p == mp || strings.HasPrefix(p, mp+"/")) && len(mp) >= len(best) {
			best, mount = mp, m
		}
	}
	for _, v := range yseq(yget(spec, "volumes")) {
		if mount != nil && ystr(yget(v, "name")) == ystr(yget(mount, "name")) {
			volume = v
		}
	}
	return mount, volume
}

// checkConfigMount checks that the config file keyrotate reads is mounted
// from a ConfigMap or secret that holds it (and parses a ConfigMap's copy).
func (c *deployChecker) checkConfigMount(file string, spec, ctr *yaml.Node, inv *deployInvocation, env map[string]*yaml.Node) {
	cfg, line, what := inv.global["config"], inv.lines["config"], "--config"
	if e := env["KEYROTATE_CONFIG"]; cfg == "" && e != nil {
		cfg, line, what = ystr(yget(e, "value")), yget(e, "name").Line, "KEYROTATE_CONFIG"
	}
	if inv.cmd == nil {
		return
	}
	if cfg == "" {
		switch inv.cmd.Name {
		case "demo", "emulator", "doctor": // these read no keyrotate.yaml
			return
		}
		c.problemf(file, ctr.Line, "the container sets neither --config nor KEYROTATE_CONFIG: keyrotate would read keyrotate.yaml from the image's working directory, which holds none")
		return
	}
	if !path.IsAbs(cfg) {
		return
	}
	mount, volume := deployMountOf(spec, ctr, cfg)
	if mount == nil {
		c.problemf(file, line, "%s (%s) is on no volumeMount of the container: mount the ConfigMap or secret that holds keyrotate.yaml at %s", cfg, what, path.Dir(cfg))
		return
	}
	if volume == nil {
		c.problemf(file, mount.Line, "volumeMount %q names no volume of the pod", ystr(yget(mount, "name")))
		return
	}
	key := path.Base(cfg)
	if sub := ystr(yget(mount, "subPath")); sub != "" {
		key = sub
	}
	if cm := yget(volume, "configMap"); cm != nil {
		items := yseq(yget(cm, "items"))
		if len(items) > 0 {
			item := ""
			for _, it := range items {
				if ystr(yget(it, "path")) == key {
					item = ystr(yget(it, "key"))
				}
			}
			if item == "" {
				c.problemf(file, volume.Line, "%s: volume %q has no item with path %q", what, ystr(yget(volume, "name")), key)
				return
			}
			key = item
		}
		name := ystr(yget(cm, "name"))
		data, ok := c.configMaps[name]
		switch {
		case !ok:
			c.problemf(file, volume.Line, "%s: ConfigMap %q (volume %q) is in none of the manifests", what, name, ystr(yget(volume, "name")))
		case yget(data, key) == nil:
			c.problemf(file, volume.Line, "%s: ConfigMap %q has no key %q", what, name, key)
		}
		return
	}
	if sec := yget(volume, "secret"); sec != nil {
		items := yseq(yget(sec, "items"))
		if len(items) > 0 && !slices.ContainsFunc(items, func(it *yaml.Node) bool { return ystr(yget(it, "path")) == key }) {
			c.problemf(file, volume.Line, "%s: secret volume %q has no item with path %q", what, ystr(yget(volume, "name")), key)
		}
	}
}

// checkReportWritable checks that --report can be written: on a read-only
// root filesystem, it must be on a writable volume.
func (c *deployChecker) checkReportWritable(file string, spec, ctr *yaml.Node, inv *deployInvocation) {
	report, ok := inv.flags["report"]
	if !ok || deployDynamic(report) || !ytrue(yget(yget(ctr, "securityContext"), "readOnlyRootFilesystem")) {
		return
	}
	if mount, _ := deployMountOf(spec, ctr, report); mount == nil || ytrue(yget(mount, "readOnly")) {
		c.problemf(file, inv.lines["report"], "--report %s: the root filesystem is read-only and no writable volume is mounted there (mount an emptyDir)", report)
	}
}

// checkNonRoot checks that the kubelet can enforce runAsNonRoot: with a
// named image user (distroless's "nonroot") it needs a numeric runAsUser.
func (c *deployChecker) checkNonRoot(file string, spec, ctr *yaml.Node) {
	get := func(key string) *yaml.Node {
		if n := yget(yget(ctr, "securityContext"), key); n != nil {
			return n
		}
		return yget(yget(spec, "securityContext"), key)
	}
	user, _, _ := strings.Cut(c.imageUser, ":")
	if _, err := strconv.Atoi(user); err == nil || user == "" {
		return
	}
	if n := get("runAsNonRoot"); ytrue(n) && get("runAsUser") == nil {
		c.problemf(file, n.Line, "runAsNonRoot without runAsUser: the image's user %q is a name, so the kubelet cannot verify it is not root and refuses to start the pod; add runAsUser: 65532", user)
	}
}

// --- GitHub Actions ---

func (c *deployChecker) checkEnvMap(file string, env *yaml.Node) {
	if env == nil || env.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(env.Content); i += 2 {
		c.checkEnvName(file, env.Content[i].Line, env.Content[i].Value)
	}
}

func (c *deployChecker) checkWorkflow(file string, doc *yaml.Node) {
	c.checkEnvMap(file, yget(doc, "env"))
	jobs := yget(doc, "jobs")
	if jobs == nil || jobs.Kind != yaml.MappingNode {
		return
	}
	for j := 1; j < len(jobs.Content); j += 2 {
		job := jobs.Content[j]
		c.checkEnvMap(file, yget(job, "env"))
		deadline, deadlineLine := 360, job.Line // GitHub's default: 6 hours
		if n := yget(job, "timeout-minutes"); n != nil {
			deadline, deadlineLine = yint(n, 0), n.Line
		}
		var reports []string
		type upload struct {
			path string
			line int
		}
		var uploads []upload
		for _, step := range yseq(yget(job, "steps")) {
			c.checkEnvMap(file, yget(step, "env"))
			uses := ystr(yget(step, "uses"))
			with := yget(step, "with")
			switch {
			case strings.HasPrefix(uses, "google-github-actions/auth@"):
				if n := yget(with, "credentials_json"); n != nil {
					c.problemf(file, n.Line, "google-github-actions/auth with credentials_json uses a service account key: use workload_identity_provider (Workload Identity Federation)")
				} else if yget(with, "workload_identity_provider") == nil {
					c.problemf(file, step.Line, "google-github-actions/auth without workload_identity_provider")
				}
			case strings.HasPrefix(uses, "actions/upload-artifact@"):
				if n := yget(with, "path"); n != nil {
					uploads = append(uploads, upload{ystr(n), n.Line})
				}
			}
			run := yget(step, "run")
			if run == nil {
				continue
			}
			for _, inv := range c.checkScript(file, run.Value, ycontentLine(run)) {
				c.checkDeadline(file, deadlineLine, "timeout-minutes", time.Duration(deadline)*time.Minute, inv)
				if r, ok := inv.flags["report"]; ok {
					reports = append(reports, r)
				}
			}
		}
		// An upload of the run record must name the file --report writes.
		norm := strings.NewReplacer("${{ runner.temp }}", "$RUNNER_TEMP", "${RUNNER_TEMP}", "$RUNNER_TEMP",
			"${{ github.workspace }}", "$GITHUB_WORKSPACE", "${GITHUB_WORKSPACE}", "$GITHUB_WORKSPACE")
		for _, u := range uploads {
			if len(reports) > 0 && !slices.ContainsFunc(reports, func(r string) bool { return norm.Replace(r) == norm.Replace(u.path) }) {
				c.problemf(file, u.line, "the artifact's path %s is not the file keyrotate's --report writes (%s)", u.path, strings.Join(reports, ", "))
			}
		}
	}
}

// --- shell ---

// deployShellCmd is one simple command of a shell script: its words, with
// quotes removed, and the line of each.
type deployShellCmd struct {
	words []string
	lines []int
}

// deployShellCommands splits a script into simple commands. It knows what
// deployment scripts use: line continuations, comments, quotes, $(...),
// ${...} and ${{ ... }} kept in one word, redirections (dropped), and the
// separators ; & | && || ( ) and newline. It is no shell: here-documents,
// for example, are not understood.
func deployShellCommands(s string, firstLine int) []deployShellCmd {
	var (
		cmds     []deployShellCmd
		cur      deployShellCmd
		word     strings.Builder
		inWord   bool
		wordLine int
		line     = firstLine
		dropNext bool // the next word is a redirection's target
	)
	endWord := func() {
		if !inWord {
			return
		}
		if dropNext {
			dropNext = false
		} else {
			cur.words, cur.lines = append(cur.words, word.String()), append(cur.lines, wordLine)
		}
		word.Reset()
		inWord = false
	}
	endCmd := func() {
		endWord()
		if len(cur.words) > 0 {
			cmds = append(cmds, cur)
		}
		cur = deployShellCmd{}
	}
	start := func() {
		if !inWord {
			inWord, wordLine = true, line
		}
	}
	// copyTo copies s[i:] up to and including the first close (counting
	// nested opens) into the word, and returns the index of close.
	copyTo := func(i int, open, close byte) int {
		depth := 0
		for ; i < len(s); i++ {
			word.WriteByte(s[i])
			switch s[i] {
			case '\n':
				line++
			case open:
				depth++
			case close:
				if depth--; depth <= 0 {
					return i
				}
			}
		}
		return i
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\' && i+1 < len(s):
			i++
			if s[i] == '\n' {
				line++ // a line continuation
				continue
			}
			start()
			word.WriteByte(s[i])
		case ch == '\n':
			endCmd()
			line++
		case ch == ' ' || ch == '\t' || ch == '\r':
			endWord()
		case ch == '#' && !inWord:
			for i+1 < len(s) && s[i+1] != '\n' {
				i++
			}
		case ch == '\'':
			start()
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				j = len(s) - i - 1
			}
			word.WriteString(s[i+1 : i+1+j])
			line += strings.Count(s[i+1:i+1+j], "\n")
			i += j + 1
		case ch == '"':
			start()
			for i++; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s) && s[i+1] == '\n':
					i++
					line++
				case s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0:
					i++
					word.WriteByte(s[i])
				default:
					if s[i] == '\n' {
						line++
					}
					word.WriteByte(s[i])
				}
			}
		case ch == '$' && strings.HasPrefix(s[i:], "${{"):
			start()
			j := strings.Index(s[i:], "}}") + 2
			if j < 2 {
				j = len(s) - i
			}
			word.WriteString(s[i : i+j])
			i += j - 1
		case ch == '$' && i+1 < len(s) && (s[i+1] == '(' || s[i+1] == '{'):
			start()
			word.WriteByte('$')
			if s[i+1] == '(' {
				i = copyTo(i+1, '(', ')')
			} else {
				i = copyTo(i+1, '{', '}')
			}
		case ch == '`':
			start()
			j := strings.IndexByte(s[i+1:], '`')
			if j < 0 {
				j = len(s) - i - 1
			}
			word.WriteString(s[i : i+1+j])
			i += j + 1
		case strings.IndexByte(";&|()", ch) >= 0:
			endCmd()
		case ch == '>' || ch == '<':
			if w := word.String(); inWord && w != "" && strings.Trim(w, "0123456789") == "" {
				word.Reset() // a file descriptor: 2>&1
				inWord = false
			} else {
				endWord()
			}
			for i+1 < len(s) && strings.IndexByte("<>&|", s[i+1]) >= 0 {
				i++
			}
			dropNext = true
		default:
			start()
			word.WriteByte(ch)
		}
	}
	endCmd()
	return cmds
}

var (
	deployAssignRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=`)
	deployGoRunRE  = regexp.MustCompile(`^(.*/)?cmd/keyrotate(@\S*)?$`)
	deployKeywords = map[string]bool{"if": true, "then": true, "else": true, "elif": true, "do": true, "while": true,
		"until": true, "!": true, "exec": true, "time": true, "command": true, "env": true, "export": true, "{": true}
)

// checkScript checks every keyrotate invocation in a shell script (run as
// keyrotate, a path ending in /keyrotate, or go run .../cmd/keyrotate), and
// the KEYROTATE_ variables it assigns. firstLine is the script's first line
// in file.
func (c *deployChecker) checkScript(file, script string, firstLine int) []*deployInvocation {
	var out []*deployInvocation
	for _, cmd := range deployShellCommands(script, firstLine) {
		w := cmd.words
		i := 0
		for ; i < len(w); i++ {
			if m := deployAssignRE.FindStringSubmatch(w[i]); m != nil {
				c.checkEnvName(file, cmd.lines[i], m[1])
				continue
			}
			if !deployKeywords[w[i]] {
				break
			}
		}
		if i == len(w) {
			continue
		}
		at := cmd.lines[i]
		if w[i] == "gcloud" {
			c.noteGcloud(w[i+1:])
			continue
		}
		switch {
		case path.Base(w[i]) == "keyrotate":
			i++
		case w[i] == "go" && i+1 < len(w) && w[i+1] == "run":
			j := i + 2
			for j < len(w) && strings.HasPrefix(w[j], "-") {
				j++
			}
			if j == len(w) || !deployGoRunRE.MatchString(w[j]) {
				continue
			}
			i = j + 1
		default:
			continue
		}
		c.invocations[file]++
		out = append(out, c.checkArgv(file, w[i:], cmd.lines[i:], at))
	}
	return out
}

// noteGcloud notes the roles a gcloud command grants on a project and the
// APIs it enables.
func (c *deployChecker) noteGcloud(args []string) {
	switch {
	case len(args) >= 2 && args[0] == "projects" && args[1] == "add-iam-policy-binding":
		for i, a := range args {
			if r, ok := strings.CutPrefix(a, "--role="); ok {
				c.granted[r] = true
			} else if a == "--role" && i+1 < len(args) {
				c.granted[args[i+1]] = true
			}
		}
	case len(args) >= 2 && args[0] == "services" && args[1] == "enable":
		for _, a := range args[2:] {
			if strings.HasPrefix(a, "-") {
				break
			}
			c.enabled[a] = true
		}
	}
}

// checkMarkdown checks the shell blocks (```sh, ```bash, ```shell) of a
// Markdown file.
func (c *deployChecker) checkMarkdown(file, text string) {
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		info, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "```")
		if !ok {
			continue
		}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[j]), "```") {
			j++
		}
		lang := ""
		if f := strings.Fields(info); len(f) > 0 {
			lang = f[0]
		}
		if lang == "sh" || lang == "bash" || lang == "shell" {
			c.checkScript(file, strings.Join(lines[i+1:min(j, len(lines))], "\n"), i+2)
		}
		i = j
	}
}

// --- Dockerfile ---

type deployDockerInstr struct {
	line int
	cmd  string // upper case
	rest string
}

// deployDockerInstructions splits a Dockerfile into instructions, joining line
// continuations and dropping comments.
func deployDockerInstructions(data []byte) []deployDockerInstr {
	var (
		out  []deployDockerInstr
		cur  strings.Builder
		from int
	)
	for i, l := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue // comments and blank lines may sit inside a continuation
		}
		if cur.Len() == 0 {
			from = i + 1
		}
		if s, ok := strings.CutSuffix(t, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(t)
		cmd, rest, _ := strings.Cut(cur.String(), " ")
		out = append(out, deployDockerInstr{from, strings.ToUpper(cmd), strings.TrimSpace(rest)})
		cur.Reset()
	}
	return out
}

type deployDockerStage struct {
	image, name string
	line        int
	instrs      []deployDockerInstr
}

// checkDockerfile checks the image: a static (CGO_ENABLED=0) build of
// ./cmd/keyrotate on a Go at least as new as go.mod's, copied into a
// distroless static nonroot final stage whose ENTRYPOINT and CMD make a
// valid keyrotate invocation.
func (c *deployChecker) checkDockerfile(file string, data []byte) {
	var stages []*deployDockerStage
	for _, in := range deployDockerInstructions(data) {
		if in.cmd == "FROM" {
			var words []string
			for _, w := range strings.Fields(in.rest) {
				if !strings.HasPrefix(w, "--") {
					words = append(words, w)
				}
			}
			st := &deployDockerStage{line: in.line}
			if len(words) > 0 {
				st.image = words[0]
			}
			if len(words) == 3 && strings.EqualFold(words[1], "AS") {
				st.name = words[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			continue
		}
		st := stages[len(stages)-1]
		st.instrs = append(st.instrs, in)
		if in.cmd == "ENV" {
			words := deployShellCommands(in.rest, in.line)
			if len(words) == 1 {
				for k, w := range words[0].words {
					if m := deployAssignRE.FindStringSubmatch(w); m != nil {
						c.checkEnvName(file, in.line, m[1])
					} else if k == 0 {
						c.checkEnvName(file, in.line, w) // ENV NAME value
						break
					}
				}
			}
		}
	}
	if len(stages) == 0 {
		c.problemf(file, 0, "no FROM")
		return
	}
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.image, "gcr.io/distroless/static") || !strings.Contains(final.image, "nonroot") {
		c.problemf(file, final.line, "the final stage is %s, want gcr.io/distroless/static-debian12:nonroot (a static binary needs no libc, and nonroot runs it as uid 65532)", final.image)
	}
	var entrypoint, cmd []string
	var epLine, cmdLine int
	shellForm := false
	copied := map[string]deployDockerInstr{} // destination -> the COPY --from
	for _, in := range final.instrs {
		switch in.cmd {
		case "USER":
			c.imageUser = in.rest
			if u, _, _ := strings.Cut(in.rest, ":"); u == "root" || u == "0" {
				c.problemf(file, in.line, "USER %s: keyrotate needs no privileges, run it as nonroot", in.rest)
			}
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(in.rest), &argv); err != nil {
				c.problemf(file, in.line, "%s in shell form runs /bin/sh, which distroless has not: use the JSON form, %s [\"/keyrotate\", ...]", in.cmd, in.cmd)
				shellForm = true
				continue
			}
			if in.cmd == "ENTRYPOINT" {
				entrypoint, epLine = argv, in.line
			} else {
				cmd, cmdLine = argv, in.line
			}
		case "COPY":
			w := strings.Fields(in.rest)
			if len(w) >= 3 && strings.HasPrefix(w[0], "--from=") {
				copied[w[len(w)-1]] = in
			}
		}
	}
	if c.imageUser == "" && strings.Contains(final.image, "nonroot") {
		c.imageUser = "nonroot"
	}
	if shellForm {
		return
	}
	if len(entrypoint) == 0 || path.Base(entrypoint[0]) != "keyrotate" {
		c.problemf(file, max(epLine, final.line), "ENTRYPOINT %q does not run keyrotate: want [\"/keyrotate\"]", entrypoint)
		return
	}
	c.imageCmd = cmd
	argv := append(slices.Clone(entrypoint[1:]), cmd...)
	lines := slices.Repeat([]int{epLine}, len(entrypoint)-1)
	lines = append(lines, slices.Repeat([]int{cmdLine}, len(cmd))...)
	c.invocations[file]++
	c.checkArgv(file, argv, lines, max(epLine, cmdLine))

	cp, ok := copied[entrypoint[0]]
	if !ok {
		c.problemf(file, epLine, "no COPY --from=... puts the binary at %s", entrypoint[0])
		return
	}
	w := strings.Fields(cp.rest)
	fromStage, src := strings.TrimPrefix(w[0], "--from="), w[len(w)-2]
	var build *deployDockerStage
	for _, st := range stages {
		if st.name == fromStage {
			build = st
		}
	}
	if build == nil {
		c.problemf(file, cp.line, "COPY --from=%s names no stage", fromStage)
		return
	}
	if m := regexp.MustCompile(`^golang:(\d+\.\d+)`).FindStringSubmatch(build.image); m != nil && c.goVersion != "" && deployVersionLess(m[1], c.goVersion) {
		c.problemf(file, build.line, "the build stage's Go (%s) is older than go.mod's go %s", m[1], c.goVersion)
	}
	cgoOff := false
	found := false
	for _, in := range build.instrs {
		if in.cmd == "ENV" && regexp.MustCompile(`(^|\s)CGO_ENABLED[= ]0(\s|$)`).MatchString(in.rest) {
			cgoOff = true
		}
		if in.cmd != "RUN" {
			continue
		}
		for _, sc := range deployShellCommands(in.rest, in.line) {
			words := sc.words
			for len(words) > 0 && strings.HasPrefix(words[0], "--") {
				words = words[1:] // RUN --mount=... and the like
			}
			var assigns []string
			for len(words) > 0 && deployAssignRE.MatchString(words[0]) {
				assigns, words = append(assigns, words[0]), words[1:]
			}
			if len(words) < 2 || words[0] != "go" || words[1] != "build" {
				continue
			}
			found = true
			if !cgoOff && !slices.Contains(assigns, "CGO_ENABLED=0") {
				c.problemf(file, in.line, "go build without CGO_ENABLED=0: the binary may need libc, which distroless/static has not")
			}
			if i := slices.Index(words, "-o"); i < 0 || i+1 == len(words) || words[i+1] != src {
				c.problemf(file, in.line, "go build does not write %s, which the final stage copies", src)
			}
			if words[len(words)-1] != "./cmd/keyrotate" {
				c.problemf(file, in.line, "go build builds %s, want ./cmd/keyrotate", words[len(words)-1])
			}
		}
	}
	if !found {
		c.problemf(file, build.line, "the stage %s has no RUN go build", fromStage)
	}
}

// deployVersionLess compares Go versions major.minor.
func deployVersionLess(a, b string) bool {
	pa, pb := strings.SplitN(a, ".", 2), strings.SplitN(b, ".", 2)
	for i := range 2 {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return false
}
