package appliance

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/bootgate/bootgate/verifier/config"
	"github.com/bootgate/bootgate/verifier/connlimit"
)

func TestPlanFiles(t *testing.T) {
	boot := &config.BootFiles{Dir: "b", TFTP: "x"}
	for _, tc := range []struct {
		name    string
		cfg     config.Config
		limit   uint64
		need    int
		wantErr error
		errText string
	}{
		{name: "API only", cfg: config.Config{}, limit: 4096, need: 256 + 1024},
		{name: "defaults", cfg: config.Config{Admin: &config.Admin{}, BootFiles: boot}, limit: 4096, need: 256 + 1024 + 64 + 643},
		{name: "defaults over a low limit", cfg: config.Config{Admin: &config.Admin{}, BootFiles: boot}, limit: 1024,
			wantErr: errFileBudget, errText: "they need 1987 (attestation API 1024, admin API 64, boot files 643, reserve 256), the limit is 1024"},
		{name: "caps lowered to fit", limit: 1024, need: 256 + 300 + 32 + 3 + 2*100 + 2*16, cfg: config.Config{
			Conns: config.ConnLimits{Max: 300}, Admin: &config.Admin{Conns: config.ConnLimits{Max: 32}},
			BootFiles: &config.BootFiles{Dir: "b", HTTPConns: config.ConnLimits{Max: 100}, TFTPTransfers: config.ConnLimits{Max: 16}}}},
		{name: "per source above max", limit: 4096, cfg: config.Config{Conns: config.ConnLimits{Max: 4, PerSource: 8}},
			wantErr: connlimit.ErrLimits},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := planFiles(&tc.cfg, tc.limit)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err %v, want %v with %q", err, tc.wantErr, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Need(); got != tc.need {
				t.Errorf("need %d, want %d", got, tc.need)
			}
		})
	}
}

func TestRaiseFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max < 512 {
		t.Skipf("hard limit %d", orig.Max)
	}
	low := syscall.Rlimit{Cur: 256, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	soft, hard, err := raiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if want := min(orig.Max, maxFileLimit); soft != want || hard != orig.Max {
		t.Fatalf("raised to %d (hard %d), want %d (hard %d)", soft, hard, want, orig.Max)
	}
}
