package eventlog

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/go-tpm/tpm2"

	"github.com/bootgate/bootgate/internal/eventlogtest"
)

func TestCacheMatchesDirectVerification(t *testing.T) {
	logs := realLogs(t)
	c := NewCache(4, 0)
	for name, raw := range logs {
		bank, err := Replay(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bank.Hash != crypto.SHA256 {
			continue
		}
		want, err := Verify(raw, bank)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for round := 0; round < 2; round++ { // a miss, then a hit
			got, err := c.Verify(raw, bank)
			if err != nil {
				t.Fatalf("%s round %d: %v", name, round, err)
			}
			if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(BootState{})); diff != "" {
				t.Fatalf("%s round %d: cached state differs (-direct +cache):\n%s", name, round, diff)
			}
		}
	}
	hits, misses := c.Stats()
	if hits == 0 || misses == 0 {
		t.Errorf("hits=%d misses=%d, want both", hits, misses)
	}
}

// A cached log must not excuse PCR values it did not replay to, and PCRs
// without events may differ between hosts sharing the log.
func TestCacheRefusesOtherPCRs(t *testing.T) {
	raw := realLogs(t)["rhel8-uefi.bin"]
	bank, err := Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCache(8, 0)
	if _, err := c.Verify(raw, bank); err != nil {
		t.Fatal(err)
	}
	// Another host with the same log whose IMA PCR holds a value: a hit.
	other := Bank{Hash: bank.Hash, PCRs: maps.Clone(bank.PCRs), Unlogged: []int{10}}
	other.PCRs[10] = bytes.Repeat([]byte{0x42}, 32)
	st, err := c.Verify(raw, other)
	if err != nil {
		t.Fatalf("PCR without events refused: %v", err)
	}
	if st.PCRs[10] != "4242424242424242424242424242424242424242424242424242424242424242" {
		t.Errorf("state carries the first host's PCRs: %v", st.PCRs[10])
	}
	// A PCR without events that is not zero is refused, hit or not: a host
	// could otherwise drop a PCR's events from its log.
	for _, cache := range []*Cache{c, NewCache(1, 0)} {
		hidden := Bank{Hash: bank.Hash, PCRs: maps.Clone(bank.PCRs), Unlogged: []int{10}}
		hidden.PCRs[11] = bytes.Repeat([]byte{0x07}, 32)
		_, err = cache.Verify(raw, hidden)
		var ue *UnexplainedError
		if !errors.As(err, &ue) || len(ue.PCRs) != 1 || ue.PCRs[0] != 11 {
			t.Fatalf("want PCR 11 unexplained, got %v", err)
		}
	}
	// The same log with a PCR that has events changed: refused as from scratch.
	bad := Bank{Hash: bank.Hash, PCRs: maps.Clone(bank.PCRs)}
	bad.PCRs[7] = bytes.Repeat([]byte{0x01}, 32)
	_, err = c.Verify(raw, bad)
	var re *ReplayError
	if !errors.As(err, &re) || len(re.PCRs) != 1 || re.PCRs[0] != 7 {
		t.Fatalf("want a replay error for PCR 7, got %v", err)
	}
}

func TestCacheIsBounded(t *testing.T) {
	c := NewCache(2, 0)
	n := 0
	for _, raw := range realLogs(t) {
		bank, err := Replay(raw)
		if err != nil || bank.Hash != crypto.SHA256 {
			continue
		}
		if _, err := c.Verify(raw, bank); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n < 3 || c.lru.Len() != 2 || len(c.entries) != 2 {
		t.Fatalf("after %d logs the cache holds %d (%d)", n, c.lru.Len(), len(c.entries))
	}
}

func TestSubjectOfMatchesX509(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "db key", Organization: []string{"bootgate test"}, Country: []string{"CH"}},
		NotBefore:    time.Now(), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	if got, err := subjectOf(der); err != nil || got != c.Subject.String() {
		t.Fatalf("subjectOf = %q, %v; x509 says %q", got, err, c.Subject.String())
	}
	if _, err := subjectOf(der[:40]); err == nil {
		t.Error("a truncated certificate has a subject")
	}
}

// Every certificate in the recorded logs' key databases gets a subject, also
// those Go's x509 parser refuses (negative serial numbers).
func TestSubjectsOfRealCertificates(t *testing.T) {
	for name, raw := range realLogs(t) {
		st := offline(t, raw)
		for _, v := range []Variable{st.PK, st.KEK, st.DB, st.DBX} {
			for _, c := range v.Certs {
				if c.Subject == "" || c.Subject == "(unparsable certificate)" {
					t.Errorf("%s: certificate %s has no subject", name, c.SHA256)
				}
			}
		}
	}
}

// bigCmdlineLog returns base with a GRUB command line of n bytes, distinct
// for each i, measured into PCR 8: a log that verifies and whose boot state
// holds the text.
func bigCmdlineLog(t testing.TB, base []byte, i, n int) []byte {
	t.Helper()
	l, err := eventlogtest.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	text := []byte(fmt.Sprintf("console=ttyS0 junk%d=", i))
	text = append(text, bytes.Repeat([]byte{'x'}, n-len(text))...)
	data := append(append([]byte("kernel_cmdline: "), text...), 0)
	const evIPL = 0x0d
	l, _ = l.Insert(l.Event(8, evIPL, data, text))
	return l.Bytes()
}

// TestCacheBoundedInBytes is the attack of a host sending many distinct
// large logs: the cache keeps within its byte budget whatever their count,
// still serves the most recent, and does not keep a log whose entry alone
// is over the budget.
func TestCacheBoundedInBytes(t *testing.T) {
	base := realLogs(t)["rhel8-uefi.bin"]
	const budget = 1 << 20
	c := NewCache(1000, budget)
	var last []byte
	var lastBank Bank
	for i := range 40 {
		raw := bigCmdlineLog(t, base, i, 100<<10)
		bank, err := Replay(raw)
		if err != nil {
			t.Fatal(err)
		}
		st, err := c.Verify(raw, bank)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Cmdlines) == 0 || len(st.Cmdlines[len(st.Cmdlines)-1].Text) != 100<<10 {
			t.Fatalf("log %d: the command line is not in the boot state", i)
		}
		last, lastBank = raw, bank
	}
	logs, used := c.Size()
	if used > budget || logs >= 40 || logs == 0 {
		t.Fatalf("after 40 logs of 100 KiB text the cache holds %d logs in %d bytes; want fewer within %d", logs, used, budget)
	}
	t.Logf("40 logs of 100 KiB text: %d kept, %d bytes (budget %d)", logs, used, budget)
	hits, _ := c.Stats()
	if _, err := c.Verify(last, lastBank); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.Stats(); h != hits+1 {
		t.Error("the most recent log is not served from the cache")
	}

	small := NewCache(1000, 50<<10)
	raw := bigCmdlineLog(t, base, 0, 100<<10)
	bank, _ := Replay(raw)
	if _, err := small.Verify(raw, bank); err != nil {
		t.Fatal(err)
	}
	if logs, used := small.Size(); logs != 0 || used != 0 {
		t.Errorf("a log over the whole budget is kept: %d logs, %d bytes", logs, used)
	}
}

// TestCacheEntrySizeBoundsTheState is the attack of a log whose events cost
// the boot state more than their own bytes: thousands of tiny unexplained
// events in PCR 8, each an Unverified entry with a hex digest and a detail,
// and variable names of 2-byte characters that escaping triples. The
// estimate an entry is charged must not be below what the state takes as
// JSON (the measure it replaced), or the cache would exceed its budget.
func TestCacheEntrySizeBoundsTheState(t *testing.T) {
	base := realLogs(t)["rhel8-uefi.bin"]
	l, err := eventlogtest.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	l = l.Only(tpm2.TPMAlgSHA256) // 50 bytes an event
	const evIPL = 0x0d
	for i := range 2000 {
		l, _ = l.Insert(l.Event(8, evIPL, nil, []byte(fmt.Sprint(i))))
	}
	l, _ = l.Insert(l.ShimAuthority(strings.Repeat("\u202e", 500), eventlogtest.SelfSigned(t, "x")))
	raw := l.Bytes()
	bank, err := Replay(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Verify(raw, bank)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Unverifiable) < 2000 {
		t.Fatalf("%d unverifiable events, want the 2000 inserted", len(st.Unverifiable))
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if est := entrySize(len(raw), st, nil); est < int64(len(js)) {
		t.Errorf("an entry of a %d-byte log is charged %d bytes, less than its state's %d bytes of JSON", len(raw), est, len(js))
	}
}
