package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestK8sTargetValid(t *testing.T) {
	in := head + slotYAML + `    targets:
      - type: k8s
        namespace: prod
        name: gemini
        key: GEMINI_API_KEY
      - type: k8s
        kubeconfig: clusters/staging.yaml
        context: staging-admin
        namespace: staging
        name: gemini.api-key
        key: api_key.txt
        restart: [api, worker]
        timeout: 10m
`
	cfg, err := Parse("/etc/keyrotate/keyrotate.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	ten := Duration(10 * time.Minute)
	want := []Target{
		{Type: TargetK8s, Namespace: "prod", Name: "gemini", Key: "GEMINI_API_KEY"},
		{Type: TargetK8s, Kubeconfig: filepath.Join("/etc/keyrotate", "clusters/staging.yaml"), Context: "staging-admin",
			Namespace: "staging", Name: "gemini.api-key", Key: "api_key.txt", Restart: []string{"api", "worker"}, Timeout: &ten},
	}
	if diff := cmp.Diff(want, cfg.Slots[0].Targets, cmpopts.IgnoreFields(Target{}, "Line")); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}
	if got := cfg.Slots[0].Targets[0].K8sTimeout(); got != DefaultK8sTimeout {
		t.Errorf("default timeout = %v", got)
	}
	if got := cfg.Slots[0].Targets[1].K8sTimeout(); got != 10*time.Minute {
		t.Errorf("timeout = %v", got)
	}
}

func TestK8sTargetInvalid(t *testing.T) {
	const key = "AQ.Ab8RN6canary-in-config_0000000000"
	target := func(fields string) string {
		return head + slotYAML + "    targets:\n      - type: k8s\n" + fields
	}
	const ok = "        namespace: prod\n        name: gemini\n        key: K\n"
	for _, tc := range []struct {
		name, in, msg, hint string
	}{
		{"no namespace", target("        name: gemini\n        key: K\n"), "k8s target has no namespace", `"namespace: prod"`},
		{"no name", target("        namespace: prod\n        key: K\n"), "k8s target has no name", `"name: gemini"`},
		{"no key", target("        namespace: prod\n        name: gemini\n"), "k8s target has no key", `"key: GEMINI_API_KEY"`},
		{"bad namespace", target("        namespace: Prod\n        name: gemini\n        key: K\n"), `invalid namespace "Prod"`, "lower-case"},
		{"bad name", target("        namespace: prod\n        name: Gemini_Key\n        key: K\n"), `invalid Secret name "Gemini_Key"`, "lower-case"},
		{"bad key", target("        namespace: prod\n        name: gemini\n        key: a/b\n"), `invalid Secret key "a/b"`, "GEMINI_API_KEY"},
		{"key string as key", target("        namespace: prod\n        name: gemini\n        key: " + key + "\n"), "key holds what looks like an API key string", "remove the key string"},
		{"restart not a list", target(ok + "        restart: api\n"), "restart must be a list", `"restart: [api]"`},
		{"restart twice", target(ok + "        restart: [api, api]\n"), `deployment "api" is listed twice`, "once"},
		{"restart bad name", target(ok + "        restart: [API]\n"), `invalid deployment name "API"`, "lower-case"},
		{"restart key string", target(ok + "        restart: [" + key + "]\n"), "restart holds what looks like an API key string", "remove the key string"},
		{"kubeconfig tilde", target(ok + "        kubeconfig: ~/.kube/config\n"), `"~" is not expanded`, "$KUBECONFIG"},
		{"timeout zero", target(ok + "        timeout: 0s\n"), "timeout must be more than 0", "5m"},
		{"timeout long", target(ok + "        timeout: 2h\n"), "longer than 1h", "at most 1h"},
		{"foreign field", target(ok + "        path: x\n"), `field "path" does not apply to a k8s target`, "namespace, name, key, kubeconfig, context, restart and timeout"},
		{"same key twice", target(ok + "      - {type: k8s, namespace: prod, name: gemini, key: K}\n"), "key K of Secret prod/gemini is already written by a k8s target", "remove one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("keyrotate.yaml", []byte(tc.in))
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tc.msg)
			}
			var msgs, hints []string
			for _, e := range Errors(err) {
				msgs, hints = append(msgs, e.Msg), append(hints, e.Fix)
			}
			if !strings.Contains(strings.Join(msgs, "\n"), tc.msg) {
				t.Errorf("messages = %q, want one containing %q", msgs, tc.msg)
			}
			if !strings.Contains(strings.Join(hints, "\n"), tc.hint) {
				t.Errorf("hints = %q, want one containing %q", hints, tc.hint)
			}
			if all := strings.Join(msgs, "\n") + strings.Join(hints, "\n") + err.Error(); strings.Contains(all, key[3:20]) {
				t.Errorf("a message repeats the key string: %q", all)
			}
		})
	}
}

func TestK8sTargetDistinct(t *testing.T) {
	// Another key, namespace, context or kubeconfig is another place.
	in := head + slotYAML + `    targets:
      - {type: k8s, namespace: prod, name: gemini, key: A}
      - {type: k8s, namespace: prod, name: gemini, key: B}
      - {type: k8s, namespace: staging, name: gemini, key: A}
      - {type: k8s, context: other, namespace: prod, name: gemini, key: A}
      - {type: k8s, kubeconfig: /k/other, namespace: prod, name: gemini, key: A}
`
	if _, err := Parse("keyrotate.yaml", []byte(in)); err != nil {
		t.Fatalf("Parse: %v", err)
	}
}
