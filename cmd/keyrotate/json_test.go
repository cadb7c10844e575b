package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdJSONDoc checks that the last keyrotate's stdout is exactly one JSON
// object (nothing before or after it) that names its exit code; when the
// run failed, also its error and hint. Arguments name further top-level
// fields it must have.
//
//	jsondoc [FIELD...]
func cmdJSONDoc(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! jsondoc")
	}
	out := ts.ReadFile("stdout")
	dec := json.NewDecoder(strings.NewReader(out))
	var doc map[string]json.RawMessage
	if err := dec.Decode(&doc); err != nil {
		ts.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		ts.Fatalf("stdout holds more than one JSON document (then %q)", extra)
	}
	if bytes.Count([]byte(out), []byte("\n")) > 0 && !strings.HasPrefix(out, "{") {
		ts.Fatalf("stdout has text before the JSON document:\n%s", out)
	}
	want := world(ts).lastExit
	var code int
	if err := json.Unmarshal(doc["exit_code"], &code); err != nil {
		ts.Fatalf("exit_code: %v (document: %s)", err, out)
	}
	if code != want {
		ts.Fatalf("exit_code = %d, want %d (the process's exit code)", code, want)
	}
	if want != 0 {
		args = append(args, "error", "hint")
	}
	for _, f := range slices.Compact(args) {
		if _, ok := doc[f]; !ok {
			ts.Fatalf("the JSON document has no %q field:\n%s", f, out)
		}
	}
}
