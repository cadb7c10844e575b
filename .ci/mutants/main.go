//go:build ignore

// Command mutants is a by-hand mutation run over the guards of keyrotate's
// invariant (an old key is never deleted while anything configured holds
// it): each mutant removes or weakens one check, and the tests of the
// packages named must fail. It never edits the tree: each mutant is
// compiled through `go test -overlay`, so an interrupted run leaves nothing
// behind and can run beside other work.
//
//	go run .ci/mutants/main.go                 # every mutant
//	go run .ci/mutants/main.go -run 'R0[1-4]'  # some, by id
//	go run .ci/mutants/main.go -list
//
// It first runs the packages' tests unmutated (a failing baseline makes
// every mutant look killed), then prints one row a mutant, with the tests
// that failed, and the kill rate: killed / (killed + survived). A mutant
// whose text is no longer in its file is "stale" (the code moved on: fix
// the entry); one that does not compile is "invalid". Neither counts.
//
// Not part of .ci/run: it takes about half an hour on two cores.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// mutant replaces the one occurrence of old in file with new.
type mutant struct {
	id, file, old, new string
	// pkgs are tested in order until one fails; nil: the file's package.
	pkgs []string
	why  string // the guard it removes
}

// Packages whose tests exercise the targets through a whole rotation.
var targetsAndRotate = []string{"./targets/", "./rotate/"}

var mutants = []mutant{
	// rotate/rotate.go: read-back, distribution, retirement.
	{id: "R01", file: "rotate/rotate.go", why: "readBack: skip the check that the secret's latest version holds the new key",
		old: `if !v.Key.Equal(st.newStr) {`, new: `if false {`},
	{id: "R02", file: "rotate/rotate.go", why: "readBack: skip the per-target comparison",
		old: `if !got.Equal(st.newStr) {`, new: `if false {`},
	{id: "R03", file: "rotate/rotate.go", why: "readBack: target mismatch error prints the raw key",
		old: `"read back %s: holds %s, want %s", t, got, want)`, new: `"read back %s: holds %s, want %s", t, got.Reveal(), want)`},
	{id: "R04", file: "rotate/rotate.go", why: "readBack: secret mismatch error prints the raw key",
		old: `st.slot.Secret, v.Name, v.Key, want)`, new: `st.slot.Secret, v.Name, v.Key.Reveal(), want)`},
	{id: "R05", file: "rotate/rotate.go", why: "readBack: a target's read error is ignored",
		old: "if err != nil {\n\t\t\treturn fmt.Errorf(\"read back %s: %w\", t, err)", new: "if false {\n\t\t\treturn fmt.Errorf(\"read back %s: %w\", t, err)"},
	{id: "R06", file: "rotate/rotate.go", why: "readBack: a failed Confirm of a write-only target is ignored",
		old: `if err := c.Confirm(ctx, st.newStr); err != nil {`, new: `if err := c.Confirm(ctx, st.newStr); false && err != nil {`},
	{id: "R07", file: "rotate/rotate.go", why: "steps: no read-back step at all",
		old: `{"readback", st.readBack},`, new: ``},
	{id: "R08", file: "rotate/rotate.go", why: "readBack: the record does not say the targets were read back",
		old: `r.Phase, r.NewKey, r.NewFP, r.NewVersion, r.Done = PhaseDistributed,`, new: `r.Phase, r.NewKey, r.NewFP, r.NewVersion, r.Done = PhaseVerifying,`},
	{id: "R09", file: "rotate/rotate.go", why: "distribute: a target's write error is ignored",
		old: "if err != nil {\n\t\t\treturn fmt.Errorf(\"write %s: %w\", t, err)", new: "if false {\n\t\t\treturn fmt.Errorf(\"write %s: %w\", t, err)"},
	{id: "R10", file: "rotate/rotate.go", why: "distribute: targets holding the old key are taken for current",
		old: `held.Equal(st.newStr) && !(ok && r.Reloads())`, new: `!held.Equal(st.newStr) && !(ok && r.Reloads())`},
	{id: "R11", file: "rotate/rotate.go", why: "distribute: after ErrTargetChanged, write over a value someone else changed",
		old: `if again, rerr := t.Read(ctx); rerr == nil && again.Equal(held) {`, new: `if _, rerr := t.Read(ctx); rerr == nil {`},
	{id: "R12", file: "rotate/rotate.go", why: "distribute: a reloading target that holds the key is not written",
		old: `!(ok && r.Reloads())`, new: `!(ok && r.Reloads() && false)`},
	{id: "R13", file: "rotate/rotate.go", why: "distribute: the secret version is not added",
		old: "v, err := st.sa.Add(ctx, st.slot.Secret, st.newStr)\n\t\tif err != nil {", new: "v, err := st.pre.latest.Name, error(nil)\n\t\tif err != nil {"},
	{id: "R14", file: "rotate/rotate.go", why: "retire: grace ignored, the old key is deleted at once",
		old: `case st.grace > 0 && st.kind == KindRotate:`, new: `case false:`},
	{id: "R15", file: "rotate/rotate.go", why: "retire: the old version is disabled while its key is kept (grace)",
		old: `if st.res.Retired == "deleted" && oldV != ""`, new: `if oldV != ""`},
	{id: "R16", file: "rotate/rotate.go", why: "retire: the newest version may be disabled",
		old: `versionNumber(oldV) != versionNumber(st.version)`, new: `true`},
	{id: "R17", file: "rotate/rotate.go", why: "retire: a failed delete of the old key is ignored",
		old: "if err := st.ka.Delete(ctx, old.Name, old.Etag); err != nil && !errors.Is(err, ErrKeyNotFound) {", new: "if err := st.ka.Delete(ctx, old.Name, old.Etag); false && err != nil {"},
	{id: "R18", file: "rotate/rotate.go", why: "Rotate: an unrestricted key is rotated (an unrestricted new key minted)",
		old: `if !restricted(pre.old.Restrictions) {`, new: `if false {`},
	{id: "R19", file: "rotate/rotate.go", why: "create: a key with the rotation's id but not made by it is adopted",
		old: `if got.Annotations[annRotation] != st.rec.ID {`, new: `if false {`},
	{id: "R20", file: "rotate/rotate.go", why: "newKeyGone: a new key deleted after distribution is taken for a failed verification (record cleared)",
		old: `if st.rec.Phase == PhaseDistributed {`, new: `if false {`},
	{id: "R21", file: "rotate/rotate.go", why: "verifyLive: a definite probe failure is retried as if temporary",
		old: `if !errors.As(err, &tmp) || !tmp.Temporary() {`, new: `if false && (!errors.As(err, &tmp) || !tmp.Temporary()) {`},
	{id: "R22", file: "rotate/rotate.go", why: "verifyLive: the first probe's answer is taken as success",
		old: "err := st.slot.Prober.Probe(ctx, st.newStr)\n\t\tif err == nil {", new: "err := st.slot.Prober.Probe(ctx, st.newStr)\n\t\tif true {"},
	{id: "R23", file: "rotate/rotate.go", why: "fail: a run that may have created a key clears its record",
		old: `case !st.mayHaveCreated:`, new: `case true:`},
	{id: "R24", file: "rotate/rotate.go", why: "create: a 429 on CreateKey is taken for a definite refusal",
		old: `code != http.StatusRequestTimeout && code != http.StatusTooManyRequests`, new: `code != http.StatusRequestTimeout`},

	// internal/gcp/pace.go: the quota's margin for clock skew.
	{id: "R25", file: "internal/gcp/pace.go", why: "NewPacer: no one-second-a-minute margin on the window",
		old: `window: window + window/60,`, new: `window: window,`},

	// rotate/lease.go: the lock.
	{id: "L01", file: "rotate/lease.go", why: "canTakeOver: a live lease not provably in our view of processes (other host, boot or namespace) is taken over",
		old: `return false // live, and not provably in our view of processes`, new: `return true // live, and not provably in our view of processes`},
	{id: "L02", file: "rotate/lease.go", why: "canTakeOver: a live lease of this process's running rotation is taken over",
		old: `return !inFlight // a finished run of this very process`, new: `return !inFlight || true // a finished run of this very process`},
	{id: "L03", file: "rotate/lease.go", why: "canTakeOver: a holder without a pid or process start time is taken for gone",
		old: "if h.PID <= 0 || h.ProcStart == \"\" || me.ProcStart == \"\" {\n\t\treturn false", new: "if h.PID <= 0 || h.ProcStart == \"\" || me.ProcStart == \"\" {\n\t\treturn true"},
	{id: "L04", file: "rotate/lease.go", why: "canTakeOver: a live holder process on this host is taken for gone",
		old: `return st != h.ProcStart // the pid now belongs to another process`, new: `return st != h.ProcStart || true // the pid now belongs to another process`},
	{id: "L05", file: "rotate/lease.go", why: "acquire: a held lease is not checked at all",
		old: `if old != nil && !takeable(old.Holder, old.Expires, now()) {`, new: `if false {`},
	{id: "L06", file: "rotate/lease.go", why: "acquire: after a lost compare-and-swap, go on from the stale preflight",
		old: `if attempt > 0 {`, new: `if false {`},
	{id: "L07", file: "rotate/lease.go", why: "write: the record write is no compare-and-swap (no etag)",
		old: `Secret{Name: l.sec.GetName(), Etag: l.sec.GetEtag(), Annotations: ann}, "annotations")`, new: `Secret{Name: l.sec.GetName(), Annotations: ann}, "annotations")`},
	{id: "L08", file: "rotate/lease.go", why: "refresh: a record of another run is taken for ours",
		old: `if cur == nil || cur.ID != l.rec.ID || cur.Holder.Run != l.rec.Holder.Run {`, new: `if cur == nil {`},
	{id: "L09", file: "rotate/lease.go", why: "refresh: a lost lease does not cancel the run",
		old: "if l.lost != nil {\n\t\t\tl.lost(errLeaseLost)", new: "if false {\n\t\t\tl.lost(errLeaseLost)"},
	{id: "L10", file: "rotate/lease.go", why: "acquire: the lease expires at once",
		old: `rec.Expires = now().Add(ttl)`, new: `rec.Expires = now()`},
	{id: "L11", file: "rotate/lease.go", why: "clear: the record is removed without a compare-and-swap",
		old: `next := &secretmanagerpb.Secret{Name: l.sec.GetName(), Etag: l.sec.GetEtag(), Annotations: ann}`, new: `next := &secretmanagerpb.Secret{Name: l.sec.GetName(), Annotations: ann}`},
	{id: "L12", file: "rotate/lease.go", why: "keepAlive: the lease is never renewed",
		old: `if err := l.update(ctx, func(*Record) {}); err != nil && err == errLeaseLost {`, new: `if err := error(nil); err != nil && err == errLeaseLost {`},

	// rotate/preflight.go: the read-only checks before any write.
	{id: "P01", file: "rotate/preflight.go", why: "preflight: a target that fails to read (missing, unwritable, ambiguous) is ignored",
		old: `if err != nil && !errors.Is(err, ErrUnreadable) {`, new: `if false {`},
	{id: "P02", file: "rotate/preflight.go", why: "preflight: a deleted current key is rotated",
		old: `case p.old.DeleteTime != "" && p.rec == nil:`, new: `case false:`},
	{id: "P03", file: "rotate/preflight.go", why: "checkProjects: a key of another project (by number) is accepted",
		old: `if n := projectOf(keyName); isNumber(n) && n != want {`, new: `if n := projectOf(keyName); false && isNumber(n) && n != want {`},
	{id: "P04", file: "rotate/preflight.go", why: "preflight: a disabled newest version is accepted",
		old: `case isCode(err, codes.FailedPrecondition):`, new: `case false && isCode(err, codes.FailedPrecondition):`},
	{id: "P05", file: "rotate/preflight.go", why: "preflight: a secret that holds no live key is accepted",
		old: "if p.oldName, err = ka.Lookup(ctx, p.latest.Key); err != nil {", new: "if p.oldName, err = ka.Lookup(ctx, p.latest.Key); false {"},

	// targets: the .env target and its atomic replace.
	{id: "T01", file: "targets/dotenv.go", pkgs: targetsAndRotate, why: "Read: a file that cannot be replaced (or others can read) passes preflight",
		old: `if err := replaceable(t, real, t.writable, t.worldReadable); err != nil {`, new: `if err := replaceable(t, real, t.writable, t.worldReadable); false && err != nil {`},
	{id: "T02", file: "targets/dotenv.go", pkgs: targetsAndRotate, why: "checkDefinition: a variable defined twice is accepted",
		old: `case len(defs) > 1:`, new: `case false:`},
	{id: "T03", file: "targets/dotenv.go", pkgs: targetsAndRotate, why: "checkDefinition: a malformed value is accepted",
		old: `case defs[0].Malformed:`, new: `case false:`},
	{id: "T04", file: "targets/dotenv.go", pkgs: targetsAndRotate, why: "Write: no check that the value is as last read",
		old: `if err := t.seen.unchanged(t, t.path, current); err != nil {`, new: `if err := t.seen.unchanged(t, t.path, current); false && err != nil {`},
	{id: "T06", file: "targets/dotenv.go", pkgs: targetsAndRotate, why: "Write: its own write is not remembered (next write refuses)",
		old: "if renamed {\n\t\tt.seen.value = key", new: "if renamed && false {\n\t\tt.seen.value = key"},
	{id: "T07", file: "targets/dotenv.go", pkgs: targetsAndRotate, why: "Write: a value that cannot be set is written anyway",
		old: `if err := f.Set(t.variable, key.Reveal()); err != nil {`, new: `if err := f.Set(t.variable, key.Reveal()); false && err != nil {`},
	{id: "T08", file: "targets/fileseen.go", pkgs: targetsAndRotate, why: "unchanged: a value changed since Read is not noticed",
		old: `if !cur.Equal(f.value) {`, new: `if false && !cur.Equal(f.value) {`},
	{id: "T09", file: "targets/fileseen.go", pkgs: targetsAndRotate, why: "lockAndLoad: a symlink moved since Read is not noticed",
		old: `if err == nil && real != f.realPath {`, new: `if err == nil && false {`},
	{id: "T10", file: "targets/fileseen.go", pkgs: targetsAndRotate, why: "lockAndLoad: a Write without a Read is allowed",
		old: `if !f.read {`, new: `if false {`},
	{id: "T11", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "replaceFile: the temp file keeps mode 0600 (file mode not kept)",
		old: `if err = tmp.Chmod(fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {`, new: `if err = error(nil); err != nil {`},
	{id: "T12", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "replaceFile: owner and group not kept",
		old: `if want, ok := ownerOf(fi); ok {`, new: `if want, ok := ownerOf(fi); false && ok {`},
	{id: "T13", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "replaceFile: a non-regular file is replaced",
		old: "if !fi.Mode().IsRegular() {\n\t\treturn false, fmt.Errorf(\"replace %s: not a regular file\", path)", new: "if false {\n\t\treturn false, fmt.Errorf(\"replace %s: not a regular file\", path)"},
	{id: "T14", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "checkWritable: the file's own write permission is not checked",
		old: "if err := unix.Access(path, unix.W_OK); err != nil {", new: "if err := unix.Access(path, unix.W_OK); false && err != nil {"},
	{id: "T15", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "checkWritable: the directory's write permission is not checked",
		old: "if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {", new: "if err := unix.Access(dir, unix.W_OK|unix.X_OK); false && err != nil {"},
	{id: "T16", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "CleanTemp: files of another name prefix are removed",
		old: `if !strings.HasPrefix(n, prefix) || !strings.HasSuffix(n, ".tmp")`, new: `if !strings.HasSuffix(n, ".tmp")`},
	{id: "T17", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "CleanTemp: a non-regular entry (a planted symlink, a directory) is removed",
		old: "if !e.Type().IsRegular() {\n\t\t\tcontinue", new: "if false {\n\t\t\tcontinue"},
	{id: "T18", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "replaceFile: the directory is not synced after the rename",
		old: `if err = syncDir(dir); err != nil {`, new: `if err = error(nil); err != nil {`},
	{id: "T19", file: "targets/atomic.go", pkgs: targetsAndRotate, why: "replaceFile: a failed rename is not reported",
		old: "if err = renameFile(name, path); err != nil {", new: "if err = renameFile(name, path); false && err != nil {"},
}

// skip is passed to go test -skip.
var skip string

var failRe = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)

func main() {
	run := flag.String("run", "", "only the mutants whose id matches this regexp")
	list := flag.Bool("list", false, "list the mutants and exit")
	vet := flag.Bool("check", false, "only check that each mutant applies once and compiles")
	timeout := flag.Duration("timeout", 6*time.Minute, "go test -timeout for one package")
	baseline := flag.Bool("baseline", true, "first run the tests unmutated")
	flag.StringVar(&skip, "skip", "^TestPacerNeverExceedsWindow$", "go test -skip: tests whose failure proves nothing about a mutant (wall-clock tests that flake on a loaded machine)")
	flag.Parse()
	root, err := os.Getwd()
	check(err)
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fatal("run from the module root")
	}
	var sel []mutant
	re := regexp.MustCompile(*run)
	for _, m := range mutants {
		if re.MatchString(m.id) {
			if m.pkgs == nil {
				m.pkgs = []string{"./" + filepath.Dir(m.file) + "/"}
			}
			sel = append(sel, m)
		}
	}
	if *list {
		for _, m := range sel {
			fmt.Printf("%s %-22s %s\n", m.id, m.file, m.why)
		}
		return
	}
	tmp, err := os.MkdirTemp("", "mutants-")
	check(err)
	defer os.RemoveAll(tmp)
	if *vet {
		bad := 0
		for _, m := range sel {
			overlay, err := apply(root, tmp, m)
			if err == nil {
				var out []byte
				out, err = exec.Command("go", "build", "-overlay="+overlay, m.pkgs[0]).CombinedOutput()
				if err != nil {
					err = fmt.Errorf("%s", firstLine(string(out)))
				}
			}
			if err != nil {
				bad++
				fmt.Printf("%s %s: %v\n", m.id, m.file, err)
			}
		}
		fmt.Printf("%d mutants, %d bad\n", len(sel), bad)
		return
	}

	if *baseline {
		var pkgs []string
		for _, m := range sel {
			for _, p := range m.pkgs {
				if !slices.Contains(pkgs, p) {
					pkgs = append(pkgs, p)
				}
			}
		}
		for _, p := range pkgs {
			if out, err := goTest(root, "", p, *timeout); err != nil {
				fatal("baseline: the tests of %s fail unmutated; fix that first:\n%s", p, out)
			}
			fmt.Fprintf(os.Stderr, "baseline %s: ok\n", p)
		}
	}

	counts := map[string]int{}
	var rows []string
	for _, m := range sel {
		start := time.Now()
		status, by := try(root, tmp, m, *timeout)
		counts[status]++
		row := fmt.Sprintf("| %s | %s | %s | %s | %s |", m.id, m.file, m.why, status, by)
		rows = append(rows, row)
		fmt.Fprintf(os.Stderr, "%s %s (%s) %s\n", m.id, status, time.Since(start).Round(time.Second), by)
	}
	fmt.Println("| id | file | mutation | result | failed tests |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
	k, s := counts["killed"], counts["survived"]
	fmt.Printf("\nkilled %d, survived %d, stale %d, invalid %d", k, s, counts["stale"], counts["invalid"])
	if k+s > 0 {
		fmt.Printf(": kill rate %.0f%% (%d/%d)", 100*float64(k)/float64(k+s), k, k+s)
	}
	fmt.Println()
}

// try builds the mutant through an overlay and runs its packages' tests.
func try(root, tmp string, m mutant, timeout time.Duration) (status, by string) {
	overlay, err := apply(root, tmp, m)
	if err != nil {
		return "stale", err.Error()
	}
	for _, p := range m.pkgs {
		out, err := goTest(root, overlay, p, timeout)
		if err == nil {
			continue
		}
		if strings.Contains(out, "[build failed]") || strings.Contains(out, "[setup failed]") {
			return "invalid", firstLine(out)
		}
		var names []string
		for _, sm := range failRe.FindAllStringSubmatch(out, -1) {
			if !strings.Contains(sm[1], "/") && !slices.Contains(names, sm[1]) {
				names = append(names, sm[1])
			}
		}
		if len(names) == 0 {
			names = []string{firstLine(out)} // a panic or a timeout
		}
		if len(names) > 4 {
			names = append(names[:4], fmt.Sprintf("+%d more", len(names)-4))
		}
		return "killed", p + " " + strings.Join(names, ", ")
	}
	return "survived", ""
}

// apply writes the mutated file and an overlay that puts it in place of
// the real one, and returns the overlay's path.
func apply(root, tmp string, m mutant) (string, error) {
	path := filepath.Join(root, m.file)
	src, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if n := bytes.Count(src, []byte(m.old)); n != 1 {
		return "", fmt.Errorf("text found %d times", n)
	}
	mutated := bytes.Replace(src, []byte(m.old), []byte(m.new), 1)
	file := filepath.Join(tmp, m.id+".go")
	if err := os.WriteFile(file, mutated, 0o644); err != nil {
		return "", err
	}
	overlay := filepath.Join(tmp, m.id+".json")
	b, err := json.Marshal(map[string]map[string]string{"Replace": {path: file}})
	if err != nil {
		return "", err
	}
	return overlay, os.WriteFile(overlay, b, 0o644)
}

func goTest(root, overlay, pkg string, timeout time.Duration) (string, error) {
	args := []string{"test", "-count=1", "-timeout=" + timeout.String()}
	if skip != "" {
		args = append(args, "-skip="+skip)
	}
	if overlay != "" {
		args = append(args, "-overlay="+overlay)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return strings.ReplaceAll(l, "|", "/")
		}
	}
	return ""
}

func check(err error) {
	if err != nil {
		fatal("%v", err)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mutants: "+format+"\n", args...)
	os.Exit(1)
}
