package main

// The "run" script command: a Cloud Run service of the demo project on the
// emulator, for cloudrun*.txtar.

import (
	"strings"

	"cloud.google.com/go/run/apiv2/runpb"
	"github.com/rogpeppe/go-internal/testscript"
)

const (
	runLocation = "europe-west1"
	runService  = "projects/" + demoProject + "/locations/" + runLocation + "/services/chat-api"
)

// cmdRun seeds and inspects the Cloud Run service:
//
//	run seed plain|pinned|latest [gcloud]
//	                               the service, GEMINI_API_KEY holding the secret's
//	                               latest key (plain), or a reference to the slot's
//	                               secret pinned to its latest version number, or to latest;
//	                               with gcloud, deployed as gcloud does: the template names
//	                               its revision (chat-api-00001-gcl)
//	run template-revision NAME|-   the template names revision NAME, or none (-)
//	run holds current|seeded       the template holds (or references) the secret's
//	                               latest key / the seeded key, and its revision serves
//	run revision N                 the serving revision is the N-th (api-0000N-xyz)
//	run pinned V                   the reference is pinned to version V
//	run fail on|off                new revisions fail to become ready, or not
//	run deny PERMISSION            the caller lacks an IAM permission
func cmdRun(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: run VERB ARG")
	}
	sw := world(ts)
	srv := sw.srv
	secretName := "projects/" + demoProject + "/secrets/" + demoSecretID
	switch args[0] {
	case "seed":
		env := &runpb.EnvVar{Name: "GEMINI_API_KEY"}
		switch args[1] {
		case "plain":
			env.Values = &runpb.EnvVar_Value{Value: latestPayload(sw)}
		case "pinned", "latest":
			v := "latest"
			if args[1] == "pinned" {
				vs := srv.SecretVersions(secretName)
				v = vs[len(vs)-1].Name[strings.LastIndex(vs[len(vs)-1].Name, "/")+1:]
			}
			env.Values = &runpb.EnvVar_ValueSource{ValueSource: &runpb.EnvVarSource{
				SecretKeyRef: &runpb.SecretKeySelector{Secret: demoSecretID, Version: v}}}
		default:
			ts.Fatalf("run seed plain|pinned|latest")
		}
		var rev string
		if len(args) > 2 && args[2] == "gcloud" {
			rev = "chat-api-00001-gcl"
		}
		_, err := srv.SeedRunService(demoProject, runLocation, "chat-api", &runpb.Service{
			Template: &runpb.RevisionTemplate{Revision: rev, Containers: []*runpb.Container{{
				Name: "app", Image: "europe-docker.pkg.dev/demo-project/chat/api:1.4.2",
				Env: []*runpb.EnvVar{{Name: "APP_ENV", Values: &runpb.EnvVar_Value{Value: "production"}}, env},
			}}}})
		ts.Check(err)
	case "holds":
		want := latestPayload(sw)
		if args[1] == "seeded" {
			want = sw.w.key.Reveal()
		}
		svc, env := runEnv(ts, sw)
		got := env.GetValue()
		if ref := env.GetValueSource().GetSecretKeyRef(); ref != nil {
			p, ok := srv.SecretPayload(secretName + "/versions/" + ref.Version)
			if !ok {
				ts.Fatalf("the service references %s/versions/%s, which cannot be read", ref.Secret, ref.Version)
			}
			got = string(p)
		}
		serving := svc.LatestReadyRevision == svc.LatestCreatedRevision && !svc.Reconciling &&
			len(svc.TrafficStatuses) == 1 && svc.TrafficStatuses[0].Revision == svc.LatestReadyRevision && svc.TrafficStatuses[0].Percent == 100
		if (got == want && serving) == neg {
			ts.Fatalf("service holds the %s key: %v, serving its template: %v (ready %s, created %s)", args[1], got == want, serving, svc.LatestReadyRevision, svc.LatestCreatedRevision)
		}
	case "revision":
		svc, _ := runEnv(ts, sw)
		if strings.HasPrefix(svc.LatestReadyRevision, "chat-api-0000"+args[1]+"-") == neg {
			ts.Fatalf("serving revision %s, want number %s", svc.LatestReadyRevision, args[1])
		}
	case "template-revision":
		svc, _ := runEnv(ts, sw)
		want := strings.TrimPrefix(args[1], "-")
		if (svc.Template.GetRevision() == want) == neg {
			ts.Fatalf("template revision %q, want %q", svc.Template.GetRevision(), want)
		}
	case "pinned":
		_, env := runEnv(ts, sw)
		if got := env.GetValueSource().GetSecretKeyRef().GetVersion(); (got == args[1]) == neg {
			ts.Fatalf("reference pinned to %q, want %q", got, args[1])
		}
	case "fail":
		srv.FailRunRevisions(args[1] == "on")
	case "deny": // run deny PERMISSION
		srv.DenyPermission(args[1])
	default:
		ts.Fatalf("run: unknown verb %q", args[0])
	}
}

func runEnv(ts *testscript.TestScript, sw *scriptWorld) (*runpb.Service, *runpb.EnvVar) {
	svc, ok := sw.srv.RunService(runService)
	if !ok {
		ts.Fatalf("no service %s", runService)
	}
	for _, e := range svc.Template.Containers[0].Env {
		if e.Name == "GEMINI_API_KEY" {
			return svc, e
		}
	}
	ts.Fatalf("GEMINI_API_KEY gone from the service")
	return nil, nil
}
