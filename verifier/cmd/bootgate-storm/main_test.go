package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bootgate/bootgate/internal/softtpm"
)

// TestProcCPU reads this process's CPU time as it reads the appliances':
// it never decreases while the process works.
func TestProcCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	before, err := procCPU([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := procCPU([]int{os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	if after < before {
		t.Errorf("CPU time went from %v to %v", before, after)
	}
	if _, err := procCPU([]int{-1}); err == nil {
		t.Error("procCPU of no process succeeded")
	}
}

// TestManufacture writes a manufacturer that loads.
func TestManufacture(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"manufacture", "--dir", dir}, &out, &errOut); err != nil {
		t.Fatalf("manufacture: %v\n%s", err, errOut.String())
	}
	if _, err := softtpm.LoadManufacturer(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, softtpm.ManufacturerCert)); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"run"}, &out, &errOut); err == nil {
		t.Error("run without flags succeeded")
	}
}
