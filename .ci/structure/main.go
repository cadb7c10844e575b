//go:build ignore

// Command structure prints the figures of the code's shape that issue 13
// measures, so that a restructuring can show them before and after:
//
//	go run .ci/structure/main.go            # every section
//	go run .ci/structure/main.go -v         # also list each long line
//
// Sections: lines per package (non-test and test); the exported names of
// rotate (`go doc -short ./rotate` and a count by kind); the ten longest
// functions with their cyclomatic complexity (gocyclo, run with `go run`
// at a pinned version from the module proxy), and every function over 80
// lines; non-test lines longer than 160 characters; lines naming
// `keyrotate …` commands in cmd/ and outside it; the calls of
// errhint.With (before: rotate.WithHint) by package; the package import graph.
//
// It only reads: informational, not part of .ci/run. It works from any
// directory of the module (it runs in the module's root).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// gocyclo is the pinned cyclomatic-complexity tool (`go list -m -versions
// github.com/fzipp/gocyclo`).
const gocyclo = "github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0"

const (
	longFunc = 80  // lines; the bar for long functions
	longLine = 160 // characters (runes; a tab is one)
)

var verbose = flag.Bool("v", false, "list every line longer than 160 characters")

type pkg struct {
	ImportPath   string
	Dir          string
	Name         string
	GoFiles      []string
	CgoFiles     []string
	TestGoFiles  []string
	XTestGoFiles []string
	Imports      []string
}

var module string

func main() {
	flag.Parse()
	root := strings.TrimSpace(run("go", "list", "-m", "-f", "{{.Dir}}"))
	if err := os.Chdir(root); err != nil {
		fail(err)
	}
	module = strings.TrimSpace(run("go", "list", "-m"))
	pkgs := listPackages()

	section("lines per package (non-test .go files | test .go files)")
	linesPerPackage(pkgs)

	section("exported names of rotate")
	exportedNames(pkgs)

	section(fmt.Sprintf("the ten longest functions (non-test), and every one over %d lines", longFunc))
	longestFunctions(pkgs)

	section(fmt.Sprintf("non-test lines longer than %d characters", longLine))
	longLines(pkgs)

	section("non-test lines naming `keyrotate …` commands (\"`keyrotate \")")
	commandWords(pkgs)

	section("non-test code lines outside cmd/ naming a --flag, no `keyrotate …` and no gcloud command (heuristic)")
	flagWords(pkgs)

	section("occurrences of errhint.With( (before: WithHint() by package (non-test)")
	withHint(pkgs)

	section("import graph (packages of this module)")
	importGraph(pkgs)
}

func section(title string) { fmt.Printf("\n== %s\n", title) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "structure:", err)
	os.Exit(1)
}

func run(name string, args ...string) string {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		fail(fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String()))
	}
	return string(out)
}

func listPackages() []pkg {
	dec := json.NewDecoder(strings.NewReader(run("go", "list", "-json", "./...")))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			fail(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// short is a package's path inside the module ("." for the root).
func short(path string) string {
	if path == module {
		return "."
	}
	return strings.TrimPrefix(path, module+"/")
}

func (p pkg) sources() []string {
	var files []string
	for _, f := range slices.Concat(p.GoFiles, p.CgoFiles) {
		files = append(files, filepath.Join(p.Dir, f))
	}
	return files
}

func (p pkg) tests() []string {
	var files []string
	for _, f := range slices.Concat(p.TestGoFiles, p.XTestGoFiles) {
		files = append(files, filepath.Join(p.Dir, f))
	}
	return files
}

func rel(path string) string {
	wd, _ := os.Getwd()
	if r, err := filepath.Rel(wd, path); err == nil {
		return r
	}
	return path
}

func fileLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func countLines(files []string) int {
	n := 0
	for _, f := range files {
		n += len(fileLines(f))
	}
	return n
}

func linesPerPackage(pkgs []pkg) {
	var src, test int
	fmt.Printf("%-28s %8s %8s %6s\n", "package", "non-test", "test", "files")
	for _, p := range pkgs {
		s, t := countLines(p.sources()), countLines(p.tests())
		src, test = src+s, test+t
		fmt.Printf("%-28s %8d %8d %6d\n", short(p.ImportPath), s, t, len(p.sources()))
	}
	fmt.Printf("%-28s %8d %8d\n", "total", src, test)
}

func exportedNames(pkgs []pkg) {
	doc := run("go", "doc", "-short", "./rotate")
	lines := strings.Split(strings.TrimSuffix(doc, "\n"), "\n")
	fmt.Printf("`go doc -short ./rotate`: %d lines\n", len(lines))
	for _, l := range lines {
		fmt.Println("  " + l)
	}
	// Every exported name a user of the package can write: top-level
	// functions, types, constants and variables (each name of a group),
	// methods of exported types, and exported fields of exported structs.
	counts := map[string]int{}
	fset := token.NewFileSet()
	for _, p := range pkgs {
		if short(p.ImportPath) != "rotate" {
			continue
		}
		for _, path := range p.sources() {
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				fail(err)
			}
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if !d.Name.IsExported() {
						continue
					}
					if d.Recv == nil {
						counts["func"]++
					} else if ast.IsExported(recvType(d.Recv.List[0].Type)) {
						counts["method"]++
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						switch s := s.(type) {
						case *ast.TypeSpec:
							if !s.Name.IsExported() {
								continue
							}
							counts["type"]++
							if st, ok := s.Type.(*ast.StructType); ok {
								for _, fl := range st.Fields.List {
									for _, n := range fl.Names {
										if n.IsExported() {
											counts["field"]++
										}
									}
								}
							}
						case *ast.ValueSpec:
							for _, n := range s.Names {
								if n.IsExported() {
									counts[strings.ToLower(d.Tok.String())]++
								}
							}
						}
					}
				}
			}
		}
	}
	top := counts["func"] + counts["type"] + counts["const"] + counts["var"]
	fmt.Printf("exported top-level names: %d (func %d, type %d, const %d, var %d); with methods of exported types: %d (method %d); exported struct fields: %d\n",
		top, counts["func"], counts["type"], counts["const"], counts["var"], top+counts["method"], counts["method"], counts["field"])
}

func recvType(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recvType(t.X)
	case *ast.IndexExpr:
		return recvType(t.X)
	case *ast.IndexListExpr:
		return recvType(t.X)
	case *ast.Ident:
		return t.Name
	}
	return ""
}

type function struct {
	name  string // pkg.Func or pkg.(*T).Method
	pos   string // file:line, relative to the module root
	lines int
	cyclo int
}

func longestFunctions(pkgs []pkg) {
	var funcs []*function
	byPos := map[string]*function{}
	var files []string
	fset := token.NewFileSet()
	for _, p := range pkgs {
		for _, path := range p.sources() {
			files = append(files, rel(path))
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				fail(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				name := fd.Name.Name
				if fd.Recv != nil {
					t := recvType(fd.Recv.List[0].Type)
					if _, ptr := fd.Recv.List[0].Type.(*ast.StarExpr); ptr {
						t = "*" + t
					}
					name = "(" + t + ")." + name
				}
				start, end := fset.Position(fd.Pos()), fset.Position(fd.End())
				fn := &function{name: f.Name.Name + "." + name, pos: fmt.Sprintf("%s:%d", rel(start.Filename), start.Line),
					lines: end.Line - start.Line + 1, cyclo: -1}
				funcs = append(funcs, fn)
				byPos[fn.pos] = fn
			}
		}
	}
	// gocyclo prints "complexity package function file:line:column".
	out := run("go", append([]string{"run", gocyclo}, files...)...)
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		c, err := strconv.Atoi(fields[0])
		pos := fields[len(fields)-1]
		pos = pos[:strings.LastIndex(pos, ":")]
		if fn := byPos[pos]; err == nil && fn != nil {
			fn.cyclo = c
		}
	}
	unmatched := 0
	for _, fn := range funcs {
		if fn.cyclo < 0 {
			unmatched++
		}
	}
	if unmatched > 0 {
		fmt.Printf("warning: gocyclo gave no complexity for %d functions (shown as -1)\n", unmatched)
	}
	sort.SliceStable(funcs, func(i, j int) bool { return funcs[i].lines > funcs[j].lines })
	fmt.Printf("%d functions and methods; complexity by %s\n", len(funcs), gocyclo)
	fmt.Printf("%5s %5s  %-44s %s\n", "lines", "cyclo", "function", "at")
	over := 0
	for i, fn := range funcs {
		if fn.lines > longFunc {
			over++
		}
		if i < 10 || fn.lines > longFunc {
			fmt.Printf("%5d %5d  %-44s %s\n", fn.lines, fn.cyclo, fn.name, fn.pos)
		}
	}
	fmt.Printf("over %d lines: %d\n", longFunc, over)
	sort.SliceStable(funcs, func(i, j int) bool { return funcs[i].cyclo > funcs[j].cyclo })
	fmt.Println("the ten most complex:")
	for _, fn := range funcs[:min(10, len(funcs))] {
		fmt.Printf("%5d %5d  %-44s %s\n", fn.lines, fn.cyclo, fn.name, fn.pos)
	}
}

func longLines(pkgs []pkg) {
	total := 0
	for _, p := range pkgs {
		n := 0
		var list []string
		for _, path := range p.sources() {
			for i, l := range fileLines(path) {
				if c := utf8.RuneCountInString(l); c > longLine {
					n++
					list = append(list, fmt.Sprintf("    %s:%d (%d)", rel(path), i+1, c))
				}
			}
		}
		total += n
		if n > 0 {
			fmt.Printf("%-28s %4d\n", short(p.ImportPath), n)
			if *verbose {
				fmt.Println(strings.Join(list, "\n"))
			}
		}
	}
	fmt.Printf("%-28s %4d\n", "total", total)
}

func commandWords(pkgs []pkg) {
	var inCmd, outside, comments int
	var list []string
	perPkg := map[string]int{}
	for _, p := range pkgs {
		below := strings.HasPrefix(short(p.ImportPath), "cmd/")
		for _, path := range p.sources() {
			for i, l := range fileLines(path) {
				if !strings.Contains(l, "`keyrotate ") {
					continue
				}
				if below {
					inCmd++
					continue
				}
				outside++
				perPkg[short(p.ImportPath)]++
				kind := "code"
				if strings.HasPrefix(strings.TrimSpace(l), "//") {
					kind = "comment"
					comments++
				}
				list = append(list, fmt.Sprintf("  %s:%d: [%s] %s", rel(path), i+1, kind, strings.TrimSpace(l)))
			}
		}
	}
	fmt.Printf("in cmd/: %d lines; outside cmd/: %d lines (%d of them comments)\n", inCmd, outside, comments)
	for _, p := range pkgs {
		if n := perPkg[short(p.ImportPath)]; n > 0 {
			fmt.Printf("%-28s %4d\n", short(p.ImportPath), n)
		}
	}
	fmt.Println(strings.Join(list, "\n"))
}

var flagWord = regexp.MustCompile("(^|[\\s`\"(])--[a-z][a-z-]+")

func flagWords(pkgs []pkg) {
	n := 0
	for _, p := range pkgs {
		if strings.HasPrefix(short(p.ImportPath), "cmd/") {
			continue
		}
		for _, path := range p.sources() {
			for i, l := range fileLines(path) {
				t := strings.TrimSpace(l)
				if strings.HasPrefix(t, "//") || !flagWord.MatchString(l) || strings.Contains(l, "`keyrotate ") || strings.Contains(l, "gcloud") {
					continue
				}
				n++
				fmt.Printf("  %s:%d: %s\n", rel(path), i+1, t)
			}
		}
	}
	fmt.Printf("%d lines\n", n)
}

var withHintCall = regexp.MustCompile(`\b(WithHint|errhint\.With)\(`)

func withHint(pkgs []pkg) {
	for _, p := range pkgs {
		n := 0
		for _, path := range p.sources() {
			for _, l := range fileLines(path) {
				n += len(withHintCall.FindAllString(l, -1))
			}
		}
		if n > 0 {
			fmt.Printf("%-28s %4d\n", short(p.ImportPath), n)
		}
	}
}

func importGraph(pkgs []pkg) {
	for _, p := range pkgs {
		var deps []string
		for _, imp := range p.Imports {
			if imp == module || strings.HasPrefix(imp, module+"/") {
				deps = append(deps, short(imp))
			}
		}
		fmt.Printf("%s -> %s\n", short(p.ImportPath), strings.Join(deps, " "))
	}
}
