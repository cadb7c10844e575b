package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/keyrotate/keyrotate/internal/emulator/fake"
	"github.com/keyrotate/keyrotate/internal/emulator/k8sfake"
)

// The Kubernetes world of the k8s*.txtar scripts, next to the demo world:
// Secret prod/gemini whose key GEMINI_API_KEY holds the seeded key, and
// deployments api (2 replicas) and worker (1) in namespace prod, served by
// the API server fake; $WORK/kubeconfig reaches it.
const (
	k8sScriptNS     = "prod"
	k8sScriptSecret = "gemini"
	k8sScriptKey    = "GEMINI_API_KEY"
)

var k8sFakes sync.Map // *testscript.TestScript -> *k8sfake.Server

func k8sFake(ts *testscript.TestScript) *k8sfake.Server {
	f, ok := k8sFakes.Load(ts)
	if !ok {
		ts.Fatalf("k8s: run \"k8s start\" first")
	}
	return f.(*k8sfake.Server)
}

// cmdK8s drives the Kubernetes API server fake:
//
//	k8s start                          start it; write $WORK/kubeconfig
//	k8s config FILE [SECRET [TIMEOUT]] the demo config plus a k8s target (restart: [api]) on Secret SECRET (default gemini)
//	k8s holds current|seeded           the Secret's key holds the secret's latest key / the seeded key
//	k8s restarted DEPLOYMENT N         the deployment's template was patched N times (generation N+1), and its rollout finished
//	k8s calls METHOD|total|mutating N  calls of GetSecret, UpdateSecret, GetDeployment, PatchDeployment, SelfSubjectAccessReview
//	k8s deny VERB RESOURCE NAME        the caller may not VERB the named secrets/deployments of prod
//	k8s stuck|unstuck DEPLOYMENT       its rollouts never finish / finish again
//	k8s fail METHOD N STATUS           the Nth next call of METHOD answers STATUS
//	k8s clean                          no secret value of the fake in the last stdout and stderr
func cmdK8s(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: k8s VERB ...")
	}
	switch verb, rest := args[0], args[1:]; verb {
	case "start":
		f, err := k8sfake.Start(k8sfake.Options{})
		ts.Check(err)
		k8sFakes.Store(ts, f)
		ts.Defer(func() { f.Close(); k8sFakes.Delete(ts) })
		f.SetSecret(k8sScriptNS, k8sScriptSecret, map[string]string{k8sScriptKey: world(ts).w.key.Reveal(), "DATABASE_PASSWORD": "k8s-db-canary-0123456789"})
		f.AddDeployment(k8sScriptNS, "api", 2)
		f.AddDeployment(k8sScriptNS, "worker", 1)
		ts.Check(f.Kubeconfig(ts.MkAbs("kubeconfig"), "default"))
	case "config":
		k8sFake(ts)
		base, err := os.ReadFile(world(ts).w.config)
		ts.Check(err)
		name, timeout := k8sScriptSecret, "20s"
		if len(rest) > 1 {
			name = rest[1]
		}
		if len(rest) > 2 {
			timeout = rest[2]
		}
		cfg := string(base) + "      - type: k8s\n        kubeconfig: " + ts.MkAbs("kubeconfig") +
			"\n        namespace: " + k8sScriptNS + "\n        name: " + name + "\n        key: " + k8sScriptKey +
			"\n        restart: [api]\n        timeout: " + timeout + "\n"
		ts.Check(os.WriteFile(ts.MkAbs(rest[0]), []byte(cfg), 0o644))
	case "holds":
		sw := world(ts)
		want := latestPayload(sw)
		if rest[0] == "seeded" {
			want = sw.w.key.Reveal()
		}
		got, _ := k8sFake(ts).Value(k8sScriptNS, k8sScriptSecret, k8sScriptKey)
		if (got == want) == neg {
			ts.Fatalf("Secret %s/%s holds %s key, want %s (%s)", k8sScriptNS, k8sScriptSecret, ghWhich(sw, got), rest[0], ghWhich(sw, want))
		}
	case "restarted":
		n, _ := strconv.Atoi(rest[1])
		d, ok := k8sFake(ts).Deployment(k8sScriptNS, rest[0])
		if !ok {
			ts.Fatalf("no deployment %s", rest[0])
		}
		st := d.Status
		rolled := st.ObservedGeneration == d.Generation && st.UpdatedReplicas == *d.Spec.Replicas && st.AvailableReplicas == *d.Spec.Replicas && st.Replicas == *d.Spec.Replicas
		got := int(d.Generation - 1)
		if (got == n && (n == 0 || rolled && d.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"] != "")) == neg {
			ts.Fatalf("deployment %s restarted %d times (rolled out: %v), want %d", rest[0], got, rolled, n)
		}
	case "calls":
		n, _ := strconv.Atoi(rest[1])
		f := k8sFake(ts)
		var got int
		switch rest[0] {
		case "total":
			got = f.Calls("")
		case "mutating":
			got = f.MutatingCalls()
		default:
			got = f.Calls(rest[0])
		}
		if (got == n) == neg {
			ts.Fatalf("Kubernetes calls %s = %d, want %d", rest[0], got, n)
		}
	case "deny":
		k8sFake(ts).Deny(rest[0], rest[1], k8sScriptNS, rest[2])
	case "stuck":
		k8sFake(ts).SetStuck(k8sScriptNS, rest[0], true)
	case "unstuck":
		k8sFake(ts).SetStuck(k8sScriptNS, rest[0], false)
	case "fail":
		n, _ := strconv.Atoi(rest[1])
		status, _ := strconv.Atoi(rest[2])
		f := k8sFake(ts)
		f.Fail(rest[0], f.Calls(rest[0])+n, fake.Fault{Status: status})
	case "clean":
		out := ts.ReadFile("stdout") + ts.ReadFile("stderr")
		for _, v := range k8sFake(ts).Values() {
			if v != "" && strings.Contains(out, v) {
				ts.Fatalf("a Kubernetes Secret's value appears in the output")
			}
		}
		if strings.Contains(out, k8sfake.Token) {
			ts.Fatalf("the kubeconfig's token appears in the output")
		}
	default:
		ts.Fatalf("k8s: unknown verb %q", fmt.Sprint(verb))
	}
}
