package archive

import (
	"runtime"

	kzstd "github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/format"
)

// Compression is the codec of every Parquet file clickagg writes (the raw
// archive's and the history's): zstd at its default level.
var Compression compress.Codec = newZstdCodec()

// zstdCodec is Parquet's ZSTD codec over one long-lived encoder and
// decoder. parquet-go's own keeps its encoders in a pool that the garbage
// collector empties, and a new encoder allocates and clears its window
// history (megabytes) before its first page: that was a quarter of the
// time of writing a chunk. EncodeAll and DecodeAll may run concurrently,
// up to the concurrency they were made with.
type zstdCodec struct {
	enc *kzstd.Encoder
	dec *kzstd.Decoder
}

func newZstdCodec() *zstdCodec {
	n := runtime.GOMAXPROCS(0)
	enc, err := kzstd.NewWriter(nil, kzstd.WithEncoderConcurrency(n), kzstd.WithEncoderLevel(kzstd.SpeedDefault),
		kzstd.WithZeroFrames(true), kzstd.WithEncoderCRC(false))
	if err != nil {
		panic(err) // only for invalid options
	}
	dec, err := kzstd.NewReader(nil, kzstd.WithDecoderConcurrency(n))
	if err != nil {
		panic(err)
	}
	return &zstdCodec{enc: enc, dec: dec}
}

func (c *zstdCodec) String() string                            { return "ZSTD" }
func (c *zstdCodec) CompressionCodec() format.CompressionCodec { return format.Zstd }

func (c *zstdCodec) Encode(dst, src []byte) ([]byte, error) {
	return c.enc.EncodeAll(src, dst[:0]), nil
}

func (c *zstdCodec) Decode(dst, src []byte) ([]byte, error) {
	return c.dec.DecodeAll(src, dst[:0])
}
