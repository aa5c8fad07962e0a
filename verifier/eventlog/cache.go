package eventlog

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"sync"
)

// Cache remembers the result of verifying event logs that many hosts share:
// machines of one hardware class, firmware and boot chain produce
// byte-identical logs. A log's replayed PCR values and boot state depend only
// on its bytes, so for a log seen before, verification reduces to hashing it
// and comparing the quoted PCR values with the ones that replayed then.
//
// A hit requires the identical log (by SHA-256) and, for every PCR that has
// events, the identical quoted value; anything else is verified from scratch.
// The cache holds at most its capacity of logs, least recently used first out.
type Cache struct {
	mu       sync.Mutex
	capacity int
	entries  map[[32]byte]*list.Element
	lru      *list.List
	hits     uint64
	misses   uint64
}

type cacheEntry struct {
	key   [32]byte
	hash  int            // crypto.Hash of the bank
	pcrs  map[int][]byte // quoted values of the PCRs that have events
	state *BootState     // PCRs field unset; filled per attestation
}

// NewCache makes a cache of at most capacity logs.
func NewCache(capacity int) *Cache {
	if capacity < 1 {
		capacity = 1
	}
	return &Cache{capacity: capacity, entries: map[[32]byte]*list.Element{}, lru: list.New()}
}

// Verify has the semantics of the package-level Verify.
func (c *Cache) Verify(raw []byte, bank Bank) (*BootState, error) {
	if len(raw) > MaxLogBytes {
		return Verify(raw, bank) // refused there, with its error
	}
	key := sha256.Sum256(raw)
	if st := c.lookup(key, bank); st != nil {
		return st, nil
	}
	st, err := verify(raw, key, bank) // the log is hashed once
	if err != nil {
		return nil, err
	}
	c.store(key, bank, st)
	return st, nil
}

func (c *Cache) lookup(key [32]byte, bank Bank) *BootState {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		c.misses++
		return nil
	}
	e := el.Value.(*cacheEntry)
	if e.hash != int(bank.Hash) {
		c.misses++
		return nil
	}
	for i, want := range e.pcrs {
		if !bytes.Equal(bank.PCRs[i], want) {
			c.misses++
			return nil
		}
	}
	if checkUnexplained(bank, e.state.eventPCRs) != nil {
		c.misses++
		return nil // verified from scratch, which reports the error
	}
	c.lru.MoveToFront(el)
	c.hits++
	st := *e.state
	st.PCRs = hexPCRs(bank.PCRs)
	return &st
}

func (c *Cache) store(key [32]byte, bank Bank, st *BootState) {
	// Keep only the PCRs the log has events for: the others (PCR 10 to 15
	// before the OS runs) may differ between hosts sharing the log.
	pcrs := map[int][]byte{}
	for i := range st.eventPCRs {
		if v, ok := bank.PCRs[i]; ok {
			pcrs[i] = bytes.Clone(v)
		}
	}
	shared := *st
	shared.PCRs = nil
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.lru.Remove(el)
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, hash: int(bank.Hash), pcrs: pcrs, state: &shared})
	for c.lru.Len() > c.capacity {
		old := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.entries, old.key)
	}
}

// Stats reports hits and misses since the cache was made.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
