package store

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// Two processes opening one new store file at once (the service's first
// start and an operator's "bootgate operator add", say) may race on the
// migrations, but neither may be told that the fresh file is "newer than
// this bootgate": that error tells the operator to upgrade, and it is
// meant for a file a newer bootgate wrote.
func TestConcurrentFirstOpenNeverTooNew(t *testing.T) {
	for i := range 30 {
		p := filepath.Join(t.TempDir(), "bootgate.db")
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := OpenSQLite(p)
				errs[j] = err
				if s != nil {
					s.Close()
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if errors.Is(err, ErrSchemaTooNew) {
				t.Fatalf("run %d: a fresh file refused as newer: %v", i, err)
			}
		}
	}
}
