package store

import (
	"context"
	"strings"
	"testing"
)

func TestRedacted(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/var/lib/bootgate/bootgate.db", "/var/lib/bootgate/bootgate.db"},
		{"postgres://bootgate:s3cret@db.example:5432/bootgate?sslmode=verify-full", "postgres://bootgate:xxxxx@db.example:5432/bootgate?sslmode=verify-full"},
		{"postgresql://bootgate@/bootgate?host=%2Frun%2Fpostgresql&password=s3cret", "postgresql://bootgate@/bootgate?host=%2Frun%2Fpostgresql&password=xxxxx"},
		{"postgres://bootgate:s3cret@db.example:bad/x", "postgres://(a URL that does not parse)"},
	} {
		if got := Redacted(tc.in); got != tc.want {
			t.Errorf("Redacted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// An unusable PostgreSQL URL is refused without quoting its password.
func TestOpenPostgresRefusesQuietly(t *testing.T) {
	for _, u := range []string{
		"postgres://bootgate:s3cret@db.example:bad/x",
		"postgres://bootgate:s3cret@/nowhere?host=/nonexistent-dir&connect_timeout=1",
	} {
		s, err := Open(context.Background(), u)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%s) succeeded", Redacted(u))
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%s): the error shows the password: %v", Redacted(u), err)
		}
	}
}
