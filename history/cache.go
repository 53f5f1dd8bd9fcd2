package history

import (
	"container/list"
	"sync"
	"unsafe"

	"github.com/clickagg/clickagg/archive"
)

// cache keeps decoded files by key, the least recently used evicted first
// once their sizes add up to more than max bytes. A key names one file
// for good (a recount writes a new revision under a new key); still, an
// entry is used only for the object's size and modification time as
// listed, so an object written again (restored, or tampered with) is read
// again rather than answered from memory.
type cache struct {
	max int64

	mu    sync.Mutex
	size  int64
	order *list.List // of *entry, most recently used first
	byKey map[string]*list.Element
}

type entry struct {
	file File
	obj  archive.Object
	size int64
}

func newCache(max int64) *cache {
	return &cache{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

func (c *cache) get(obj archive.Object) (File, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[obj.Key]
	if !ok {
		return File{}, false
	}
	if v := e.Value.(*entry).obj; v.Size != obj.Size || !v.ModTime.Equal(obj.ModTime) {
		c.order.Remove(e)
		delete(c.byKey, obj.Key)
		c.size -= e.Value.(*entry).size
		return File{}, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*entry).file, true
}

// put adds f, read from obj, unless it alone is larger than the cache.
func (c *cache) put(f File, obj archive.Object) {
	size := fileSize(f)
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[f.Key]; ok {
		return // read by two queries at once
	}
	c.byKey[f.Key] = c.order.PushFront(&entry{file: f, obj: obj, size: size})
	c.size += size
	for c.size > c.max {
		old := c.order.Back()
		e := old.Value.(*entry)
		c.order.Remove(old)
		delete(c.byKey, e.file.Key)
		c.size -= e.size
	}
}

// fileSize is about the memory f's rows take: strings are counted per
// row, though rows of one ad may share theirs.
func fileSize(f File) int64 {
	size := int64(unsafe.Sizeof(f)) + int64(len(f.Key))
	for i := range f.Rows {
		r := &f.Rows[i]
		size += int64(unsafe.Sizeof(*r)) + int64(len(r.AdID)+len(r.Country)) + 8*int64(cap(r.UserIDHashes)+cap(r.IPHashes))
	}
	return size
}
