package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCloudRunTarget(t *testing.T) {
	in := head + slotYAML + `    targets:
      - type: cloudrun
        service: projects/my-project/locations/europe-west1/services/api
        var: GEMINI_API_KEY
      - type: cloudrun
        service: projects/123456789/locations/us-central1/services/worker-2
        container: app
        var: GEMINI_API_KEY
`
	c, err := Parse("keyrotate.yaml", []byte(in))
	if err != nil {
		t.Fatalf("Parse:\n%s\nerror: %v", in, dump(err))
	}
	want := []Target{
		{Type: TargetCloudRun, Service: "projects/my-project/locations/europe-west1/services/api", Var: "GEMINI_API_KEY", Line: 7},
		{Type: TargetCloudRun, Service: "projects/123456789/locations/us-central1/services/worker-2", Container: "app", Var: "GEMINI_API_KEY", Line: 10},
	}
	if diff := cmp.Diff(want, c.Slots[0].Targets); diff != "" {
		t.Errorf("cloudrun targets mismatch (-want +got):\n%s", diff)
	}
}

func TestCloudRunTargetInvalid(t *testing.T) {
	target := func(lines string) string { return head + slotYAML + "    targets:\n      - type: cloudrun\n" + lines }
	const svc = "        service: projects/my-project/locations/europe-west1/services/api\n"
	for _, tc := range []struct {
		name, yaml string
		line       int
		msg, hint  string
	}{
		{"no service", target("        var: K\n"), 7, "cloudrun target has no service", "projects/my-project/locations/us-central1/services/api"},
		{"no var", target(svc), 7, "cloudrun target has no var", "var: GEMINI_API_KEY"},
		{"short service", target("        service: api\n        var: K\n"), 8, `"api" is not a Cloud Run service name`, "projects/PROJECT/locations/REGION/services/SERVICE"},
		{"bad region", target("        service: projects/my-project/locations/eu/services/api\n        var: K\n"), 8, "is not a region", "us-central1"},
		{"bad service id", target("        service: projects/my-project/locations/europe-west1/services/Api\n        var: K\n"), 8, "service id", "lowercase"},
		{"bad container", target(svc + "        container: App_1\n        var: K\n"), 9, `invalid container name "App_1"`, "lowercase"},
		{"bad var", target(svc + "        var: GEMINI-KEY\n"), 9, `invalid variable name "GEMINI-KEY"`, "GEMINI_API_KEY"},
		{"foreign field", target(svc + "        var: K\n        path: x\n"), 10, `field "path" does not apply to a cloudrun target`, "service, var and container"},
		{"key string", target("        service: AQ.Ab8RN6abcdef\n        var: K\n"), 8, "looks like an API key string", "remove"},
		{"same var twice", target(svc+"        var: K\n") + "      - {type: cloudrun, service: projects/my-project/locations/europe-west1/services/api, var: K}\n", 10, "api K is already written by", "remove one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("keyrotate.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("Parse:\n%s\n= %+v, want error", tc.yaml, c)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			for _, e := range Errors(err) {
				if e.Line == tc.line && strings.Contains(e.Msg, tc.msg) && strings.Contains(e.Hint(), tc.hint) {
					if strings.Contains(e.Error()+e.Hint(), "AQ.Ab8RN6") {
						t.Errorf("error %q or hint %q repeats the key string", e.Error(), e.Hint())
					}
					return
				}
			}
			t.Errorf("Parse:\n%s\nerrors:\n%s\nwant one at line %d with message containing %q and hint containing %q", tc.yaml, dump(err), tc.line, tc.msg, tc.hint)
		})
	}
}
