// Package shipper tails the click logs that ad servers append to and sends
// their clicks to the routers, exactly once as far as the counts go.
//
// # Lines
//
// A log is JSON lines ({"event_id"?, "ad_id", "click_time", "user_id",
// "ip", "country"}) or CSV (ad_id,click_timestamp,user_id,ip,country, a
// header line equal to those names skipped); times are RFC 3339 or Unix
// epoch milliseconds. Blank lines are skipped. A line that cannot be parsed
// is malformed: it is logged (file, line number, byte offset, reason),
// counted, and passed over. A click the router rejects (Rejection: an
// invalid field, a click_time outside the router's window) is logged and
// counted the same way and never retried. A last line without a newline is
// not read until its newline is written, except at the end of a file that
// was rotated away and stopped growing.
//
// # Event ids
//
// A line that carries no event_id gets one derived from where its bytes
// are (EventID):
//
//	<host>:<dev>:<ino>:<head>:<gen>:<offset>
//
// host is the shipper's -id (the hostname by default; unique per shipper,
// stable across restarts), dev and ino the file's device and inode in
// decimal, head the CRC-32 (hex) of the file's first line, which tells a
// file from a later one that reuses its inode, gen the number of
// truncations of the file seen (copytruncate starts the same inode again at
// offset 0), and offset the byte offset of the line's first byte. Reading
// the same bytes of the same file again always yields the same ids.
//
// # Exactly once
//
// For each log path the shipper keeps, in its checkpoint file, the file
// being read (dev, ino, head, gen, the name it was last seen under) and the
// byte offset and line number just past the last acknowledged line. A
// batch is sent to a router; only after the router answered (every event
// accepted, i.e. durably appended to the partition log, or rejected) is the
// checkpoint written, atomically: a temporary file, fsync, rename, fsync of
// the directory. So:
//
//   - killed before the answer: the batch is read again from the
//     checkpoint and sent with the same ids; whatever the router had
//     already appended is dropped by the aggregators' dedup by the pair
//     (ad_id, event_id), which a line always gives again.
//   - killed between the answer and the checkpoint: the same; the batch is
//     sent again and counted once.
//   - killed after the checkpoint: nothing is sent again.
//
// A failed request is retried at the next router with a jittered
// exponential backoff from -ship.retry-min to -ship.retry-max; the shipper
// never drops a batch and never skips ahead, it waits until a router
// accepts.
//
// The limit is the routers' acceptance horizon (-router.acceptance-horizon,
// 6h by default, which is also how long the aggregators remember ids): a
// click older than it is rejected, so a shipper that was down, or blocked,
// for longer than the horizon gets rejections for the clicks that aged out
// while it was away. Nothing is lost silently: each is logged as a
// rejected line and counted, and the checkpoint moves past it.
//
// # Rotation
//
// Rename rotation: when the log path names another file than the one being
// read, the old file is read to its end and, once it has not grown for
// -ship.rotate-wait, finished; then the shipper moves to the oldest file in
// the same directory whose name starts with the log's name, modified after
// the finished one (a file rotated again before the shipper got to it),
// or else to the new file at the path. A restarted shipper finds its
// checkpointed file by identity under any such name. Compressed files
// (.gz, .zst, ...) and the checkpoint file are never read, and no two
// -ship.files in one directory may have names that start with each other.
//
// copytruncate: when the file shrinks below the checkpointed offset it is
// read again from 0 under the next gen; a restarted shipper also compares
// the first line's checksum, so it notices a truncation even when the file
// grew back past the old offset while it was down (a running one checks
// the size every -ship.poll-interval). Lines written after the last
// acknowledged one and before the truncation are lost: that is
// copytruncate's own race, and why rename rotation is preferred. The copy
// is named like a rotated file: made while the shipper is still finishing
// an older renamed file, it would look rotated after it and be shipped
// too. So do not mix copytruncate with rename rotation of one log unless
// the shipper is caught up at each copy, which copytruncate needs anyway.
//
// Rotated files are ordered by modification time, whose granularity is the
// kernel's clock tick: two rotations within a few milliseconds of each
// other while the shipper is behind cannot be ordered, and the later file
// may be skipped.
//
// # Lifecycle
//
// New does no I/O. Run loads the checkpoint, dials the routers and runs one
// tailer per log path; it returns when its context ends, with every
// goroutine ended and the checkpoint at the last acknowledged batch.
package shipper
