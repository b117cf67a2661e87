package tier

import (
	"bytes"
	"container/list"
	"context"
	"fmt"
	"sync"
)

// Memory is an in-memory LRU cache holding at most MaxBytes of blobs, its
// own copies of them.
type Memory struct {
	max int64

	mu    sync.Mutex
	lru   list.List // of *memEntry, most recent first
	byKey map[string]*list.Element
	size  int64
}

type memEntry struct {
	name string
	data []byte
}

// NewMemory returns a cache bounded to maxBytes (a blob larger than that is
// not cached).
func NewMemory(maxBytes int64) *Memory {
	return &Memory{max: maxBytes, byKey: map[string]*list.Element{}}
}

func (m *Memory) Get(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byKey[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	m.lru.MoveToFront(e)
	return bytes.Clone(e.Value.(*memEntry).data), nil
}

func (m *Memory) Put(_ context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	if int64(len(data)) > m.max {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.byKey[name]; ok {
		m.lru.MoveToFront(e)
		return nil
	}
	m.byKey[name] = m.lru.PushFront(&memEntry{name, bytes.Clone(data)})
	m.size += int64(len(data))
	for m.size > m.max {
		m.remove(m.lru.Back())
	}
	return nil
}

func (m *Memory) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.byKey[name]; ok {
		m.remove(e)
	}
	return nil
}

func (m *Memory) remove(e *list.Element) {
	me := m.lru.Remove(e).(*memEntry)
	delete(m.byKey, me.name)
	m.size -= int64(len(me.data))
}

// Size returns the bytes held.
func (m *Memory) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}
