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
// The cache holds at most its capacity of logs and its budget of bytes,
// least recently used first out: the logs are the hosts', and a host can
// send many distinct large ones.
type Cache struct {
	mu       sync.Mutex
	capacity int
	maxBytes int64
	bytes    int64 // sum of the entries' size
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
	size  int64          // bytes the entry holds, as entrySize estimates them
}

// DefaultCacheBytes is the byte budget of a cache made with a budget of 0:
// 64 MiB, room for thousands of the boot states of real logs (a few KiB
// each).
const DefaultCacheBytes = 64 << 20

// NewCache makes a cache of at most capacity logs (at least 1) whose
// entries hold at most maxBytes bytes in all (DefaultCacheBytes if
// maxBytes <= 0). An entry's size is estimated as the length of its boot
// state's JSON encoding plus its PCR values and a fixed overhead; a log
// whose entry alone is over the budget is verified but not kept.
func NewCache(capacity int, maxBytes int64) *Cache {
	if capacity < 1 {
		capacity = 1
	}
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	return &Cache{capacity: capacity, maxBytes: maxBytes, entries: map[[32]byte]*list.Element{}, lru: list.New()}
}

// entryOverhead estimates the bytes an entry holds beyond its boot state's
// strings and PCR values: list element, map slots, the key, headers.
const entryOverhead = 512

// entryElementBytes bounds what one element of a boot state's lists
// (boot applications, authorities, actions, command lines, anomalies,
// unverifiable events, quirk uses) holds beyond the log bytes it was read
// from: its struct, its hex digest, and the fixed text of its detail.
const entryElementBytes = 384

// entrySize bounds the bytes an entry for a log of rawLen bytes holds, with
// pcrs and st, without encoding the state: every string a boot state holds
// is read from the log (its text at most three times its bytes once
// escaped: a 2-byte UTF-16 character becomes \uNNNN) or is fixed text of
// an element (entryElementBytes).
func entrySize(rawLen int, st *BootState, pcrs map[int][]byte) int64 {
	n := int64(entryOverhead) + 3*int64(rawLen)
	elems := len(st.BootApps) + len(st.Authorities) + len(st.Actions) + len(st.Cmdlines) +
		len(st.Anomalies) + len(st.Unverifiable) + len(st.Quirks)
	n += int64(elems) * entryElementBytes
	for _, v := range pcrs {
		n += int64(len(v)) + 16
	}
	n += int64(len(st.eventPCRs)) * 16
	return n
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
	c.store(key, len(raw), bank, st)
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

func (c *Cache) store(key [32]byte, rawLen int, bank Bank, st *BootState) {
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
	size := entrySize(rawLen, &shared, pcrs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	if size > c.maxBytes {
		return
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, hash: int(bank.Hash), pcrs: pcrs, state: &shared, size: size})
	c.bytes += size
	for c.lru.Len() > c.capacity || c.bytes > c.maxBytes {
		c.remove(c.lru.Back())
	}
}

// remove drops an entry; c.mu is held.
func (c *Cache) remove(el *list.Element) {
	old := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, old.key)
	c.bytes -= old.size
}

// Size reports the logs the cache holds and their estimated bytes (see
// NewCache).
func (c *Cache) Size() (logs int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}

// Stats reports hits and misses since the cache was made.
func (c *Cache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
