package main

import (
	"io"
	"os"

	"golang.org/x/term"
)

// isTerminal reports whether r is an interactive terminal (so a command that
// reads stdin should say what it waits for).
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
