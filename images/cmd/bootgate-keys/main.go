// Command bootgate-keys creates and shows bootgate's own Secure Boot test keys.
//
// Usage:
//
//	bootgate-keys gen  [--dir build/keys]
//	bootgate-keys show [--dir build/keys]
//
// gen creates, for PK, KEK, db and a second "other vendor" db, an RSA-2048 key
// (NAME.key) and a self-signed certificate valid for ten years (NAME.pem and
// NAME.der). Existing keys are kept, so gen is safe to run on every build. show
// prints the subject, serial, validity and SHA-256 fingerprint of each
// certificate.
package main

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/bootgate/bootgate/images/keys"
)

const usage = `usage: bootgate-keys gen|show [--dir DIR]

  gen   create the missing Secure Boot test keys (existing ones are kept)
  show  print the certificates
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("bootgate-keys "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "build/keys", "key directory")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "bootgate-keys: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var err error
	switch cmd {
	case "gen":
		err = gen(stdout, *dir)
	case "show":
		err = show(stdout, *dir)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "bootgate-keys: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "bootgate-keys:", err)
		return 1
	}
	return 0
}

func gen(w io.Writer, dir string) error {
	specs := keys.All()
	pairs, statuses, err := keys.Ensure(dir, specs, time.Now())
	if err != nil {
		return err
	}
	for i, s := range specs {
		fmt.Fprintf(w, "keys: %-8s %-9s %q sha256:%x\n", s.Name, statuses[i], pairs[i].Cert.Subject.CommonName, sha256.Sum256(pairs[i].Cert.Raw))
	}
	return nil
}

func show(w io.Writer, dir string) error {
	for _, s := range keys.All() {
		p, err := keys.Load(dir, s)
		if err != nil {
			return err
		}
		c := p.Cert
		keyPath, pemPath, derPath := s.Paths(dir)
		fmt.Fprintf(w, "%s:\n  subject  %s\n  serial   %x\n  valid    %s .. %s\n  sha256   %x\n  files    %s %s %s\n",
			s.Name, c.Subject, c.SerialNumber, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339),
			sha256.Sum256(c.Raw), keyPath, pemPath, derPath)
	}
	return nil
}
