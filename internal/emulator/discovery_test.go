package emulator

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apikeys "google.golang.org/api/apikeys/v2"
)

// TestDiscoveryCopyMatchesModule: the embedded discovery document is the
// one in the google.golang.org/api version go.mod names, the client
// keyrotate sends its requests with.
func TestDiscoveryCopyMatchesModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "google.golang.org/api").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Skip("google.golang.org/api is not in the module cache")
	}
	want, err := os.ReadFile(filepath.Join(dir, "apikeys", "v2", "apikeys-api.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(apiKeysDiscovery, want) {
		t.Errorf("internal/emulator/apikeys-api.json differs from %s/apikeys/v2/apikeys-api.json: copy it again and update the version in discovery.go", dir)
	}
}

// TestAPIKeysRequestsCheckedAgainstDiscovery sends malformed requests of
// each kind: each is answered as Google's front end answers it and recorded
// as a violation naming the field.
func TestAPIKeysRequestsCheckedAgainstDiscovery(t *testing.T) {
	s, svc, _ := startKeys(t, Options{})
	k := wait(t, svc, mustDo(t, svc.Projects.Locations.Keys.Create("projects/proj-a/locations/global", &apikeys.V2Key{DisplayName: "k1"}).KeyId("k1").Do))
	keyPath := "/v2/" + k.Name
	for _, tc := range []struct {
		name, method, path, body string
		wantCode                 int
		wantField, wantMsg       string
	}{
		{"unknown body field", "POST", "/v2/projects/proj-a/locations/global/keys?keyId=k2", `{"displayName":"x","colour":"red"}`,
			400, "key.colour", `Invalid JSON payload received. Unknown name "colour" at 'key': Cannot find field.`},
		{"unknown nested field", "POST", "/v2/projects/proj-a/locations/global/keys?keyId=k3", `{"restrictions":{"apiTargets":[{"service":"generativelanguage.googleapis.com","servise":"x"}]}}`,
			400, "key.restrictions.api_targets[0].servise", `Invalid JSON payload received. Unknown name "servise" at 'key.restrictions.api_targets[0]': Cannot find field.`},
		{"wrong JSON type", "POST", "/v2/projects/proj-a/locations/global/keys?keyId=k4", `{"displayName":5}`,
			400, "key.display_name", `Invalid value at 'key.display_name' (TYPE_STRING), 5`},
		{"wrong type in a list", "PATCH", keyPath + "?updateMask=restrictions", `{"restrictions":{"serverKeyRestrictions":{"allowedIps":"10.0.0.1"}}}`,
			400, "key.restrictions.server_key_restrictions.allowed_ips", `Invalid value at 'key.restrictions.server_key_restrictions.allowed_ips' (TYPE_MESSAGE), "10.0.0.1"`},
		{"wrong enum", "DELETE", keyPath + "?checkExistingUsage=MAYBE", "",
			400, "check_existing_usage", `Invalid value at 'check_existing_usage' (TYPE_ENUM), "MAYBE"`},
		{"updateMask path that does not exist", "PATCH", keyPath + "?updateMask=colour", `{"displayName":"y"}`,
			400, "update_mask", `Invalid update_mask path "colour": Key has no such mutable field (mutable: display_name, restrictions, annotations).`},
		{"updateMask path that is not mutable", "PATCH", keyPath + "?updateMask=displayName,serviceAccountEmail", `{"displayName":"y"}`,
			400, "update_mask", `Invalid update_mask path "serviceAccountEmail": Key has no such mutable field (mutable: display_name, restrictions, annotations).`},
		{"unknown query parameter", "GET", "/v2/projects/proj-a/locations/global/keys?filter=x", "",
			400, "filter", `Invalid JSON payload received. Unknown name "filter": Cannot bind query parameter. Field 'filter' could not be found in request message.`},
		{"missing required parameter", "GET", "/v2/keys:lookupKey", "",
			400, "key_string", `Missing required parameter 'key_string'.`},
		{"wrong integer", "GET", "/v2/projects/proj-a/locations/global/keys?pageSize=ten", "",
			400, "page_size", `Invalid value at 'page_size' (TYPE_INT32), "ten"`},
		// Ignored by the API (field_behavior.proto: the server must not
		// throw an error), recorded all the same.
		{"output-only field", "PATCH", keyPath + "?updateMask=displayName", `{"displayName":"y","uid":"x"}`,
			200, "key.uid", `Output-only field 'key.uid' sent in a request: the API ignores it.`},
		{"no such method", "GET", keyPath + ":frobnicate", "",
			404, "", `no method of the API Keys API matches GET ` + keyPath + ":frobnicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(s.SchemaViolations())
			req, err := http.NewRequest(tc.method, "http://"+s.APIKeysAddr+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, b, tc.wantCode)
			}
			if tc.wantCode == 400 {
				var body struct {
					Error struct {
						Message, Status string
						Details         []struct {
							Type            string `json:"@type"`
							FieldViolations []struct{ Field, Description string }
						}
					}
				}
				if err := json.Unmarshal(b, &body); err != nil {
					t.Fatal(err)
				}
				if body.Error.Status != "INVALID_ARGUMENT" || body.Error.Message != tc.wantMsg {
					t.Errorf("error = %s %q, want INVALID_ARGUMENT %q", body.Error.Status, body.Error.Message, tc.wantMsg)
				}
				if len(body.Error.Details) != 1 || body.Error.Details[0].Type != "type.googleapis.com/google.rpc.BadRequest" ||
					len(body.Error.Details[0].FieldViolations) != 1 || body.Error.Details[0].FieldViolations[0].Field != tc.wantField {
					t.Errorf("details = %+v, want one BadRequest field violation of %q", body.Error.Details, tc.wantField)
				}
			}
			vs := s.SchemaViolations()[before:]
			if len(vs) != 1 || vs[0].Field != tc.wantField || vs[0].Message != tc.wantMsg {
				t.Errorf("violations recorded = %+v, want one of %q: %q", vs, tc.wantField, tc.wantMsg)
			}
		})
	}
}
