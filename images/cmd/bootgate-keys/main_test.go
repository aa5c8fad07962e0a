package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestGenKeepsAndShows(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if rc := run([]string{"gen", "--dir", dir}, &out, &errb); rc != 0 {
		t.Fatalf("gen: exit %d: %s", rc, errb.String())
	}
	if n := strings.Count(out.String(), " created "); n != 4 {
		t.Errorf("first gen created %d pairs, want 4:\n%s", n, out.String())
	}
	out.Reset()
	if rc := run([]string{"gen", "-dir", dir}, &out, &errb); rc != 0 {
		t.Fatalf("second gen: exit %d: %s", rc, errb.String())
	}
	if n := strings.Count(out.String(), " kept "); n != 4 {
		t.Errorf("second gen kept %d pairs, want 4:\n%s", n, out.String())
	}
	out.Reset()
	if rc := run([]string{"show", "--dir", dir}, &out, &errb); rc != 0 {
		t.Fatalf("show: exit %d: %s", rc, errb.String())
	}
	for _, cn := range []string{"bootgate test PK", "bootgate test KEK", "bootgate test db", "other vendor db"} {
		if !strings.Contains(out.String(), "CN="+cn) {
			t.Errorf("show does not list %q:\n%s", cn, out.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"frobnicate"}, {"gen", "extra"}, {"gen", "--nope"}} {
		var out, errb bytes.Buffer
		if rc := run(args, &out, &errb); rc != 2 {
			t.Errorf("%q: exit %d, want 2", args, rc)
		}
	}
}
