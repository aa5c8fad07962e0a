package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/bootgate/bootgate"

// pkg is what the rules read of `go list -json`.
type pkg struct {
	ImportPath string
	Imports    []string
	Standard   bool
}

// graph maps import paths to their direct imports.
type graph map[string][]string

// rule forbids packages that From matches to depend, directly or not, on
// packages that Forbidden matches.
type rule struct {
	Name      string
	From      func(string) bool
	Forbidden func(string) bool
}

// own reports whether p is the module's package rel or under it.
func own(p, rel string) bool {
	full := module + "/" + rel
	return p == full || strings.HasPrefix(p, full+"/")
}

func inModule(p string) bool { return p == module || strings.HasPrefix(p, module+"/") }

func under(p string, prefixes ...string) bool {
	for _, pre := range prefixes {
		if p == pre || strings.HasPrefix(p, pre+"/") {
			return true
		}
	}
	return false
}

// testHelper reports whether p is a module package for tests only: under
// internal/, named *test.
func testHelper(p string) bool {
	return own(p, "internal") && strings.HasSuffix(path.Base(p), "test")
}

// tpmTransports open or simulate a TPM: a device, a socket, a simulator.
// go-attestation's attest package is not among them although it can also
// open a TPM: the verifier uses its verifying half (AK public areas,
// quotes, event logs), and imports cannot tell the halves apart.
var tpmTransports = []string{
	"github.com/google/go-tpm/tpm2/transport/linuxtpm",
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm",
	"github.com/google/go-tpm/tpm2/transport/simulator",
	"github.com/google/go-tpm/tpm2/transport/tcp",
	"github.com/google/go-tpm-tools/simulator",
	"github.com/google/go-tpm-tools/client",
}

var rules = []rule{
	{
		Name: "the agent imports nothing of the verifier but verifier/wire",
		From: func(p string) bool { return own(p, "agent") },
		Forbidden: func(d string) bool {
			return own(d, "verifier") && !own(d, "verifier/wire")
		},
	},
	{
		Name: "verification is pure: no net/http, store, database, TPM transport or agent",
		From: func(p string) bool {
			return own(p, "verifier/eventlog") || own(p, "verifier/policy") || own(p, "verifier/attest") || own(p, "verifier/seal") || own(p, "verifier/admission")
		},
		Forbidden: func(d string) bool {
			return under(d, "net/http", "database/sql", "modernc.org/sqlite", "github.com/jackc/pgx") ||
				own(d, "verifier/store") || own(d, "verifier/server") || own(d, "agent") || under(d, tpmTransports...)
		},
	},
	{
		Name: "boot knows nothing of attestation",
		From: func(p string) bool { return own(p, "boot") },
		Forbidden: func(d string) bool {
			return own(d, "verifier") || own(d, "agent") ||
				under(d, "github.com/google/go-attestation", "github.com/google/go-tpm-tools", "github.com/google/go-eventlog")
		},
	},
	{
		Name:      "nothing imports qemu but tests and the demo",
		From:      func(p string) bool { return inModule(p) && !own(p, "qemu") },
		Forbidden: func(d string) bool { return own(d, "qemu") },
	},
	{
		Name:      "test helpers are imported only by tests",
		From:      func(p string) bool { return inModule(p) && !own(p, "qemu") && !testHelper(p) },
		Forbidden: testHelper,
	},
	{
		// Both sides build on it (the agent, its production-OS image, the
		// verifier): it carries the protocol, never anyone's logic.
		Name:      "verifier/wire imports the standard library only",
		From:      func(p string) bool { return own(p, "verifier/wire") },
		Forbidden: func(d string) bool { return !standard(d) },
	},
}

// standard reports whether p is a standard library package: its first path
// element has no dot (the go command's own rule).
func standard(p string) bool {
	first, _, _ := strings.Cut(p, "/")
	return !strings.Contains(first, ".")
}

// loadGraph runs go list -deps -json over the whole module (tests left out)
// and returns its import graph and the module's packages.
func loadGraph(t *testing.T) (graph, []string) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports,Standard", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	g := graph{}
	var own []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		g[p.ImportPath] = p.Imports
		if inModule(p.ImportPath) {
			own = append(own, p.ImportPath)
		}
	}
	return g, own
}

// violations returns, for every package of roots that r.From matches and
// every package r.Forbidden matches that it reaches, the shortest import
// chain from one to the other, as "a → b → c".
func (g graph) violations(r rule, roots []string) []string {
	var out []string
	for _, root := range roots {
		if !r.From(root) {
			continue
		}
		// Breadth first, so each chain found is a shortest one.
		prev := map[string]string{root: ""}
		queue := []string{root}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			for _, d := range g[p] {
				if _, seen := prev[d]; seen {
					continue
				}
				prev[d] = p
				if r.Forbidden(d) {
					chain := []string{d}
					for q := p; q != ""; q = prev[q] {
						chain = append(chain, q)
					}
					slices.Reverse(chain)
					out = append(out, strings.Join(chain, " → "))
					continue // one chain per forbidden package is enough
				}
				queue = append(queue, d)
			}
		}
	}
	return out
}

// TestDependencyRules checks DESIGN.md's dependency rules on the module's
// import graph.
func TestDependencyRules(t *testing.T) {
	g, roots := loadGraph(t)
	if len(roots) < 10 {
		t.Fatalf("go list found %d packages of %s: is this the module?", len(roots), module)
	}
	for _, r := range rules {
		t.Run(r.Name, func(t *testing.T) {
			checked := 0
			for _, p := range roots {
				if r.From(p) {
					checked++
				}
			}
			if checked == 0 {
				t.Fatalf("the rule applies to no package: its paths are stale")
			}
			for _, v := range g.violations(r, roots) {
				t.Errorf("forbidden import chain: %s", v)
			}
		})
	}
}

// TestViolationsNameTheChain: a forbidden package reached through others
// is reported with the whole chain, the shortest one.
func TestViolationsNameTheChain(t *testing.T) {
	a, b, c := module+"/agent/x", module+"/boot", module+"/verifier/store"
	g := graph{a: {b, "fmt"}, b: {c}, c: {"database/sql"}, "fmt": nil}
	got := g.violations(rules[0], []string{a, b, c})
	want := []string{fmt.Sprintf("%s → %s → %s", a, b, c)}
	if !slices.Equal(got, want) {
		t.Fatalf("violations %q, want %q", got, want)
	}
	if got := g.violations(rules[2], []string{a, b, c}); len(got) != 1 || got[0] != b+" → "+c {
		t.Fatalf("boot's violations %q", got)
	}
}
