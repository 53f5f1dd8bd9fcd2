// Package watchfile reads a file again when it changes, for the
// credentials that Kubernetes mounts and rotates in place: certificates,
// keys, CA bundles, authorization policies and token lists.
//
// A caller checks a File when it is about to use what the file holds (a
// TLS handshake, an RPC's authorization), not on a timer: there is no
// goroutine to own, and no window in which the process uses content the
// file no longer holds. A check is one stat call; a file whose inode,
// size and modification time are unchanged is trusted, any other is read
// again. No fsnotify: a Secret update is a symlink swap in a parent
// directory, which watches see badly, and a stat sees at once.
//
// A modification time is only as fine as the file system's clock tick,
// so a rewrite within the tick after a read could keep the same size and
// time. As git does for its racily clean index, a file whose modification
// time is within RacyWindow of the moment it was read is not trusted and
// is read again (its content is compared, so nothing is parsed again
// unless its bytes changed) until it is older.
//
// Checking and committing are separate steps so that a caller can stage
// several files, parse them together, and keep the last good set when
// the new one does not parse.
package watchfile
