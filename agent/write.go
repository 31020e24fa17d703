package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// ErrEmpty is returned by WriteFile for empty content: a destination is never
// left empty.
var ErrEmpty = errors.New("agent: refusing to write an empty file")

// WriteFile replaces the file at path with data atomically: a temp file in
// the same folder is written, fsynced, given mode and owner (uid, gid; -1
// keeps the agent's), renamed over path, and the folder is fsynced. A reader
// sees the old content or the new, never a mix, an empty or a partial file.
//
// It writes nothing when path already holds data with that mode and owner,
// and reports whether it wrote. Empty data is refused with ErrEmpty.
func WriteFile(path string, data []byte, mode os.FileMode, uid, gid int) (changed bool, err error) {
	return writeFile(path, data, mode, uid, gid, true)
}

// writeFile is WriteFile; without durable it skips both fsyncs: the
// replacement is still atomic for readers and survives the process dying,
// though not the machine losing power (the agent's own state file, whose loss
// costs at most a re-render, never a wrong file).
func writeFile(path string, data []byte, mode os.FileMode, uid, gid int, durable bool) (changed bool, err error) {
	if len(data) == 0 {
		return false, ErrEmpty
	}
	if same(path, data, mode, uid, gid) {
		return false, nil
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, cause(err))
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err != nil {
		return false, fmt.Errorf("write %s: chmod: %w", path, cause(err))
	}
	if uid >= 0 || gid >= 0 {
		if err = f.Chown(uid, gid); err != nil {
			return false, fmt.Errorf("write %s: chown: %w", path, cause(err))
		}
	}
	if _, err = f.Write(data); err != nil {
		return false, fmt.Errorf("write %s: %w", path, cause(err))
	}
	if durable {
		if err = f.Sync(); err != nil {
			return false, fmt.Errorf("write %s: fsync: %w", path, cause(err))
		}
	}
	if err = f.Close(); err != nil {
		return false, fmt.Errorf("write %s: close: %w", path, cause(err))
	}
	if err = os.Rename(tmp, path); err != nil {
		return false, fmt.Errorf("write %s: rename: %w", path, cause(err))
	}
	if !durable {
		return true, nil
	}
	if d, derr := os.Open(dir); derr == nil {
		derr = d.Sync()
		d.Close()
		if derr != nil {
			return true, fmt.Errorf("write %s: fsync folder: %w", path, cause(derr))
		}
	}
	return true, nil
}

// same reports whether path holds data with mode and owner already.
func same(path string, data []byte, mode os.FileMode, uid, gid int) bool {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode.Perm() || fi.Size() != int64(len(data)) {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if (uid >= 0 && int(st.Uid) != uid) || (gid >= 0 && int(st.Gid) != gid) {
			return false
		}
	}
	old, err := os.ReadFile(path)
	return err == nil && bytes.Equal(old, data)
}

// lookupUser resolves a user name or numeric ID; "" is -1 (keep).
func lookupUser(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("no user %q on this host", s)
	}
	return strconv.Atoi(u.Uid)
}

// lookupGroup resolves a group name or numeric ID; "" is -1 (keep).
func lookupGroup(s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("no group %q on this host", s)
	}
	return strconv.Atoi(g.Gid)
}

// cause drops the path from an *os.PathError (the caller names the file).
func cause(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}
